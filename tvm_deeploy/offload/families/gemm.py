"""GEMM and matmul, fp32 and int8 (QDQ or integer requantization) -> `dpl_gemm_tiled`, on the cluster
or the NPU (plan/engines.py chooses)."""

from __future__ import annotations

import numpy as np
from tvm.relax.dpl import is_const, is_op, wildcard

from ...emit.ops import _emit_gemm
from ...plan.attribute import tiling_fields
from ...plan.engines import choose_engine
from ...plan.tiling import GemmTiling
from .. import reference
from ..describe import describe_gemm
from ..dpl import add_either_order, matmul, maybe, maybe_permuted
from ..registry import Family, register
from ..specs import GemmSpec


def matmul_pattern():
    return matmul()


def gemm_pattern():
    return add_either_order(matmul(), wildcard())


def qdq_gemm_pattern():
    def dequantize():
        return is_op("relax.dequantize")(wildcard(), is_const(), is_const())

    product = is_op("relax.matmul")(dequantize(), maybe_permuted(dequantize()))
    bias = is_op("relax.dequantize")(is_const(), is_const(), is_const()) | is_const()
    return is_op("relax.quantize")(add_either_order(product, bias) | product, is_const(), is_const())


def int_requant_gemm_pattern():
    # matmul(int8, int8 -> int32) [+ bias] [* mul] [+ add] >> shift [+ zp] -> clip -> astype(int8)
    acc = maybe("relax.add", matmul())
    acc = maybe("relax.add", maybe("relax.multiply", acc))
    shifted = maybe("relax.add", is_op("relax.right_shift")(acc, is_const()))
    return is_op("relax.astype")(is_op("relax.clip")(shifted, wildcard(), wildcard()))


def plan(spec: GemmSpec, platform) -> dict:
    """Tile for every engine that can run it and keep the fastest (modelled)."""
    choice = choose_engine(spec, platform)
    t = choice.tiling
    # B as the kernel reads it: packed in lane words (plan/lanes.py), packed for the NPU, or as the graph holds it
    b_layout = "lanes" if t.b_lanes_chunk else "npu" if t.engine == "npu" else "as stored"
    return {"engine": t.engine, "b_layout": b_layout, "tile": [t.tile_m, t.tile_n, spec.k],
            "tile_axes": ["m", "n", "k"], "tiles": t.tiles, "cores": t.cores, "l1_bytes": t.l1_bytes,
            "single_buffered": [name for name, slots in (("a", t.l1_a), ("b", t.l1_b)) if slots[0] == slots[1]],
            "dma_in_bytes": t.dma_in_bytes, "dma_out_bytes": t.dma_out_bytes,
            "dma_bytes": t.dma_in_bytes + t.dma_out_bytes, "dma_lower_bound": t.dma_lower_bound,
            "modelled_cycles": dict(choice.estimates), "solver_status": t.solver_status, "tiling": tiling_fields(t)}


def summary(spec: GemmSpec) -> str:
    batch = "x".join(map(str, spec.batch))
    quant = "" if spec.requant is None else f", requant {spec.requant.mode}"
    return (f"gemm {spec.dtype}->{spec.out_dtype} {batch + ' x ' if batch else ''}"
            f"m={spec.m} n={spec.n} k={spec.k}{', B^T' if spec.b_transposed else ''}{quant}")


FAMILY = register(Family(
    kind=GemmSpec.kind,
    patterns=(("gemm_qdq", qdq_gemm_pattern), ("gemm_int_requant", int_requant_gemm_pattern),
              ("gemm", gemm_pattern), ("matmul", matmul_pattern)),
    describe=describe_gemm, plan=plan, tiling_type=GemmTiling, emit=_emit_gemm,
    reference=lambda spec: reference.gemm_s8 if spec.dtype == "int8" else np.matmul,
    summary=summary, shapes=lambda spec: {"a": list(spec.a.shape), "b": list(spec.b.shape)}))
