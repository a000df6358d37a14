"""Engine choice: each offloadable GEMM goes to the cluster or the NPU, whichever the cycle model
(platforms.ClusterCosts, NpuCosts; see tiling.policy) says is faster, both tiled for their engine.

The NPU runs int8 linear layers with constant weights and "fixed" (QDQ) requantization and no weight
zero point (tvm_deeploy/targets/npu.py); anything else — fp32, activation x activation, integer requantization,
int32 results — stays on the cluster. Weights mapped to the NPU stay resident in its weight memory,
whose size bounds them all together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tvm_ffi

from ..offload.specs import GemmSpec, summary
from ..targets import npu
from ..targets.platforms import Platform
from . import lanes
from .tiling import GemmTiling, TilingError, tile_gemm


@tvm_ffi.register_error
class WeightMemoryError(ValueError):
    """The weights mapped to the NPU do not fit its weight memory."""


def npu_refusal(spec: GemmSpec, platform: Platform) -> str | None:
    """Why the NPU cannot run this GEMM, or None when it can."""
    if not platform.npu:
        return "the NPU is off"
    if (spec.dtype, spec.out_dtype) != ("int8", "int8") or spec.requant is None or spec.requant.mode != "fixed":
        return "not an int8 linear layer with QDQ requantization"
    if not spec.b.is_const or spec.batch:
        return "weights are not a constant matrix"
    if spec.b_zp or spec.a_zp:
        return "zero points the NPU does not take"
    return None


@dataclasses.dataclass(frozen=True)
class EngineChoice:
    tiling: GemmTiling
    estimates: tuple[tuple[str, int], ...]  # (engine, modelled cycles) of every engine that can run it
    reasons: tuple[tuple[str, str], ...]  # (engine, why not) of the others


def lanes_chunk(spec: GemmSpec, platform: Platform) -> int:
    """The k chunk of B packed in lane words (plan/lanes.py) when the cluster runs this GEMM so, else 0: an int8
    GEMM against one constant B without an activation zero point (folded into the bias), platform.lanes on."""
    if not platform.lanes:
        return 0
    if spec.dtype != "int8" or not spec.b.is_const or spec.a_zp or len(spec.batch_offsets("b")) != 1:
        return 0
    return lanes.lanes_chunk(spec.b.const, spec.b_transposed)


def _tile_on_cluster(spec: GemmSpec, platform: Platform) -> GemmTiling:
    """The cluster's tiling, with B in lane words where its larger blocks fit L1, else B as stored."""
    chunk = lanes_chunk(spec, platform)
    if chunk:
        try:
            return tile_gemm(spec, platform, "cluster", b_lanes_chunk=chunk)
        except TilingError:
            pass  # the packed blocks do not fit L1
    return tile_gemm(spec, platform, "cluster")


def choose_engine(spec: GemmSpec, platform: Platform) -> EngineChoice:
    """Tile the GEMM for every engine that can run it (on the cluster with B packed in lane words where that
    applies) and keep the one with the fewest modelled cycles."""
    candidates, reasons, errors = [], [], []
    refusal = npu_refusal(spec, platform)
    for engine in ("cluster", "npu"):
        if engine == "npu" and refusal:
            reasons.append((engine, refusal))
            continue
        try:
            candidates.append(_tile_on_cluster(spec, platform) if engine == "cluster"
                              else tile_gemm(spec, platform, engine))
        except TilingError as err:
            reasons.append((engine, str(err)))
            errors.append(err)
    if not candidates:
        raise errors[0]
    best = min(candidates, key=lambda t: (t.modelled_cycles, t.engine))
    return EngineChoice(best, tuple((t.engine, t.modelled_cycles) for t in candidates), tuple(reasons))


def check_weight_memory(specs_on_npu: list[GemmSpec], platform: Platform) -> int:
    """Bytes of packed NPU weights; raises WeightMemoryError when they overflow the weight memory."""
    if not specs_on_npu:  # also on a platform without an NPU (and so without its weight memory)
        return 0
    needed = sum(npu.packed_size(spec.k, spec.n) for spec in specs_on_npu)
    available = platform.level("weights").bytes
    if needed > available:
        largest = max(specs_on_npu, key=lambda s: s.k * s.n)
        raise WeightMemoryError(
            f"the NPU's weight memory holds {available} bytes; the {len(specs_on_npu)} layers mapped to it need "
            f"{needed} (largest: {summary(largest)}); compile with npu=False (--no-npu) to keep them on the cluster")
    return needed


def plan_on_cores(work_cycles: Callable[[int], int], platform: Platform) -> dict:
    """The plan of an untiled element-wise or row-wise op (its operands stay where they are, in L2): the
    number of cores with the fewest modelled cycles (of equal ones, the fewest cores), where
    `work_cycles(cores)` is the slowest core's share of the work and a fork/join over more than one core
    adds platform.cluster_costs.fork_cycles."""
    fork = platform.cluster_costs.fork_cycles
    cycles = {c: work_cycles(c) + (fork if c > 1 else 0) for c in range(1, platform.cores + 1)}
    cores = min(cycles, key=lambda c: (cycles[c], c))
    return {"engine": "cluster", "tile": None, "tile_axes": None, "tiles": 1, "cores": cores, "l1_bytes": 0,
            "single_buffered": [], "dma_in_bytes": 0, "dma_out_bytes": 0, "dma_bytes": 0, "dma_lower_bound": 0,
            "modelled_cycles": {"cluster": cycles[cores]}, "solver_status": "untiled", "tiling": None}
