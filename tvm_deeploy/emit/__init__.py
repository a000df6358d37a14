"""Emission: op specs and their plans -> C source, and the `relax.ext.deeploy` codegen."""
