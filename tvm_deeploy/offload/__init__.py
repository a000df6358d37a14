"""Offload: the op families deeploy runs, their patterns, descriptions (specs) and NumPy references, and partitioning."""
