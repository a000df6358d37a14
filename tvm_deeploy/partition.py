"""Partition a Relax module: offloadable subgraphs become functions with Codegen="deeploy"."""

from __future__ import annotations

import tvm
from tvm import relax

from .patterns import deeploy_patterns


def partition_for_deeploy(mod: tvm.IRModule) -> tvm.IRModule:
    """Group every offloadable op into its own function carrying `Codegen="deeploy"`.

    One function per op keeps each offload a single kernel call that the tiler can treat alone.
    Idempotent: already partitioned calls are calls to global functions, which no pattern matches.
    """
    return tvm.transform.Sequential([
        relax.transform.ConvertToDataflow(min_size=1),
        relax.transform.FuseOpsByPattern(deeploy_patterns(), bind_constants=True, annotate_codegen=True),
    ])(mod)
