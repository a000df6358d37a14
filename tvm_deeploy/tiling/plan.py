"""Tiling results as plain data."""

from __future__ import annotations

from dataclasses import dataclass

import tvm_ffi


@tvm_ffi.register_error
class TilingError(ValueError):
    """No tiling fits the memory level; the message names the op, its shapes and the smallest size that works.

    Registered with tvm-ffi so that it keeps its type when raised inside `tvm.relax.build`."""


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
    solver_status: str  # "optimal", or "feasible (time limit)" when the search was cut short
    solver_seconds: float
