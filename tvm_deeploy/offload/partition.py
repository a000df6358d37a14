"""Partition a Relax module: offloadable subgraphs become functions with Codegen="deeploy"."""

from __future__ import annotations

import tvm
from tvm import relax

from .matmul_integer import matmul_integer_as_int8
from .patterns import checked_matching, deeploy_patterns
from .qdq import unshare_qdq


def _is_offloaded(func) -> bool:
    return isinstance(func, relax.Function) and bool(func.attrs) and "Codegen" in func.attrs


def partition_for_deeploy(mod: tvm.IRModule) -> tvm.IRModule:
    """Group every offloadable op into its own function carrying `Codegen="deeploy"`.

    One function per op keeps each offload a single kernel call that the tiler can treat alone.
    Idempotent: functions offloaded earlier are kept as they are, and calls to them match no pattern.
    Raises PatternCheckError if a pattern check failed other than by refusing the match.
    """
    earlier = {gvar: func for gvar, func in mod.functions.items() if _is_offloaded(func)}
    with checked_matching():
        mod = tvm.transform.Sequential([
            relax.transform.ConvertToDataflow(min_size=1),
            unshare_qdq,
            matmul_integer_as_int8,
            relax.transform.FuseOpsByPattern(deeploy_patterns(), bind_constants=True, annotate_codegen=True),
        ])(mod)
    for gvar, func in earlier.items():
        mod[gvar] = func
    return mod
