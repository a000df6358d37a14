"""Tiling results as plain data."""

from __future__ import annotations

from dataclasses import dataclass

import tvm_ffi


@tvm_ffi.register_error
class TilingError(ValueError):
    """No tiling fits the memory level; the message names the op, its shapes and the smallest size that works.

    Registered with tvm-ffi so that it keeps its type when raised inside `tvm.relax.build`."""


def check_nonzero(what: str, **dims: int) -> None:
    """Raise TilingError naming `what` and the first zero-size dimension (an empty op has no tiling)."""
    for name, size in dims.items():
        if size == 0:
            sizes = " ".join(f"{key}={value}" for key, value in dims.items())
            raise TilingError(f"{what} has a zero-size dimension {name}=0 ({sizes}); there is nothing to tile")


@dataclass(frozen=True)
class GemmTiling:
    """Output tiles of tile_m x tile_n with the whole reduction, computed by `engine` ("cluster" or
    "npu"). An operand whose two slot offsets are equal is single-buffered; on the NPU, B is not in L1."""

    engine: str
    tile_m: int
    tile_n: int
    tiles: int
    cores: int
    l1_a: tuple[int, int]  # byte offsets of the two A slots in the L1 arena (equal: one slot)
    l1_b: tuple[int, int]
    l1_y: tuple[int, int]
    l1_bytes: int  # end of the last slot: the L1 arena this op needs
    dma_in_bytes: int
    dma_out_bytes: int
    dma_lower_bound: int  # every input byte loaded once, every output byte stored once
    modelled_cycles: int
    solver_status: str  # "optimal", "feasible (search limit)", "greedy" or "greedy (solver found none)"
    solver_seconds: float
    b_lanes_chunk: int = 0  # > 0: B packed in lane words (plan/lanes.py), sums taken out every this many k steps


@dataclass(frozen=True)
class AttentionTiling:
    """Row tiles of tile_h query heads x tile_q query rows visiting key blocks of tile_kv keys
    (see tiling/attention.py). K and V are single-buffered when their two slot offsets are equal."""

    tile_h: int
    tile_q: int
    tile_kv: int
    tiles: int  # row tiles
    steps: int  # key blocks visited, over every pass of every row tile
    cores: int
    l1_q: tuple[int, int]
    l1_k: tuple[int, int]
    l1_v: tuple[int, int]
    l1_mask: tuple[int, int]
    l1_o: tuple[int, int]
    l1_state: int
    l1_scores: int
    l1_lut: int
    l1_bytes: int
    dma_in_bytes: int
    dma_out_bytes: int
    dma_lower_bound: int
    modelled_cycles: int
    solver_status: str
    solver_seconds: float
    l1_k_f32: int = 0  # an fp32 attention's int8 K: the float32 buffer its blocks are dequantized into
    l1_v_f32: int = 0

    @property
    def single_buffered(self) -> list[str]:
        return [name for name, slots in (("k", self.l1_k), ("v", self.l1_v)) if slots[0] == slots[1]]

    def report(self) -> dict:
        """The fields compile_report and the exported report.json show (without solver seconds)."""
        return {"tile": [self.tile_h, self.tile_q, self.tile_kv], "tile_axes": ["heads", "queries", "keys"],
                "tiles": self.tiles, "steps": self.steps, "cores": self.cores, "l1_bytes": self.l1_bytes,
                "single_buffered": self.single_buffered, "dma_in_bytes": self.dma_in_bytes,
                "dma_out_bytes": self.dma_out_bytes, "dma_lower_bound": self.dma_lower_bound,
                "modelled_cycles": self.modelled_cycles, "solver_status": self.solver_status}
