"""GEMM tile geometry: what tile sizes cost, for the schedule `dpl_gemm_tiled` runs.

Tiles go batch by batch, row block by row block, column block fastest. An A block holds tile rows x
the whole reduction, a B block the whole reduction x tile columns; a block already in L1 is not
fetched again. Each operand has two L1 slots (double buffering: the next block streams in while
the current one is used) or one (single buffering: the next block comes in after the current tile,
unhidden, for half the L1); the output tile always has two.
On the NPU, B is the packed weight matrix resident in the NPU's weight memory: never fetched, no L1.
A B packed in lane words (plan/lanes.py) moves in whole panels of columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...offload.specs import GemmSpec
from ..lanes import LANES_PANEL, PANEL_BYTES_PER_K

ALIGN = 8  # every L1 slot starts on an 8-byte boundary


def aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


@dataclass(frozen=True)
class GemmGeometry:
    """The sizes a GEMM's tiling depends on, in elements and bytes per element."""

    batch: int
    m: int
    n: int
    k: int
    a_elem: int
    b_elem: int
    y_elem: int
    a_runs: int  # batches whose A differs from the previous batch's (broadcast A repeats)
    b_runs: int
    weights_resident: bool = False  # NPU: B lives in the weight memory
    b_lanes: bool = False  # B packed in lane words (plan/lanes.py): panels of LANES_PANEL columns

    @property
    def b_panel(self) -> int:
        """Columns of B stored together: a B block holds whole panels (or all columns)."""
        return LANES_PANEL if self.b_lanes else 1

    @property
    def b_panel_bytes(self) -> int:
        """Bytes of one panel per k step that go through L1 (0 when B is resident in the NPU's weight memory)."""
        if self.weights_resident:
            return 0
        return PANEL_BYTES_PER_K if self.b_lanes else self.b_elem

    def b_bytes(self, cols: int) -> int:
        """Bytes of a B block of `cols` columns and the whole reduction, as it goes through L1."""
        return -(-cols // self.b_panel) * self.k * self.b_panel_bytes

    @property
    def lower_bound(self) -> int:
        """DMA bytes if every distinct input byte were loaded once and every output byte stored once."""
        return (self.a_runs * self.m * self.k * self.a_elem + self.b_runs * self.b_bytes(self.n)
                + self.batch * self.m * self.n * self.y_elem)

    def slot_bytes(self, tile_m: int, tile_n: int) -> tuple[int, int, int]:
        """Aligned bytes of one A, B and Y slot."""
        return (aligned(tile_m * self.k * self.a_elem), aligned(self.b_bytes(tile_n)),
                aligned(tile_m * tile_n * self.y_elem))

    def l1_bytes(self, tile_m: int, tile_n: int, a_slots: int = 2, b_slots: int = 2) -> int:
        a_slot, b_slot, y_slot = self.slot_bytes(tile_m, tile_n)
        return a_slots * a_slot + b_slots * b_slot + 2 * y_slot

    def dma_bytes(self, tile_m: int, tile_n: int) -> tuple[int, int]:
        """(bytes into L1, bytes out of L1) of the schedule with these tile sizes.

        With one row block, A stays in L1 across a batch and is fetched again only where the
        batch's A differs; otherwise every row block is fetched once (columns run fastest).
        With one column block, B likewise stays; otherwise B is fetched again for every row block.
        """
        row_blocks, col_blocks = math.ceil(self.m / tile_m), math.ceil(self.n / tile_n)
        a_fetches_whole = self.a_runs if row_blocks == 1 else self.batch
        b_fetches_whole = self.b_runs if col_blocks == 1 else self.batch * row_blocks
        into_l1 = a_fetches_whole * self.m * self.k * self.a_elem + b_fetches_whole * self.b_bytes(self.n)
        return into_l1, self.batch * self.m * self.n * self.y_elem


def _runs(offsets: list[int]) -> int:
    """How many batches start a new operand block: the offset differs from the previous batch's."""
    return sum(1 for i, off in enumerate(offsets) if i == 0 or off != offsets[i - 1])


def element_bytes(dtype: str) -> int:
    return {"float32": 4, "int32": 4, "int8": 1}[dtype]


def geometry(spec: GemmSpec, engine: str = "cluster", b_lanes: bool = False) -> GemmGeometry:
    batch = math.prod(spec.batch)
    return GemmGeometry(batch, spec.m, spec.n, spec.k, element_bytes(spec.dtype), element_bytes(spec.dtype),
                        element_bytes(spec.out_dtype), _runs(spec.batch_offsets("a")),
                        _runs(spec.batch_offsets("b")), weights_resident=engine == "npu", b_lanes=b_lanes)
