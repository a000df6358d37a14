"""Attention tile geometry: what a choice of tiles costs in L1 bytes, DMA traffic and steps, for the
schedule `dpl_attention_tiled` runs (c_kernels/dpl_kernels.h describes it; keep the two in step).

A tile is tile_h query heads x tile_q query rows (a row tile), which visits key blocks of tile_kv
keys: the blocks its last row can see (causal masking skips the rest). Row tiles run batch by batch,
head block by head block, query block fastest. fp32 runs one pass over the blocks (online softmax);
int8 with more than one block two (exact row maximum first, then the integer sums). A step is one
key block of one pass. Per head block:
  Q    once per row tile;
  K    at every step whose key block differs from the block held (so K stays in L1 across the
       query blocks of a head block when one block holds every key the rows see);
  V    likewise, at the steps of the last pass;
  mask (fp32) at every step, only along the axes it does not broadcast;
  O    once per row tile.
An fp32 attention may read K and/or V as int8 (an int8 KV cache): those blocks move as int8 bytes into their
slots, and each new block is dequantized into one float32 buffer ("k_f32", "v_f32") the compute reads.
A head block fetches the K/V heads from the lowest to the highest its query heads read (its span).
A run-time mask only lowers the traffic (keys it hides from every row are not fetched; a mask of one row
that is +-0 up to its last visible key is not fetched at all): these figures bound it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...offload.reference import EXP2_LUT
from ...offload.specs import AttentionSpec
from .gemm import ALIGN, aligned, element_bytes

LUT_BYTES = EXP2_LUT.nbytes  # int8: the uint16 exp2 table, copied into L1 once


@dataclass(frozen=True)
class HeadBlocks:
    """The head blocks of one tile_h: how many, their K/V spans (sum, largest) and mask heads."""

    count: int
    span_sum: int
    span_max: int
    mask_heads_sum: int
    mask_heads_max: int


@dataclass(frozen=True)
class KeyTraffic:
    """Per head block, for one (tile_q, tile_kv): what every K/V head and mask head costs."""

    row_tiles: int
    steps: int
    k_rows: int  # key rows fetched per K/V head
    v_rows: int
    k_fetches: int
    v_fetches: int
    mask_elements: int  # per mask head
    mask_fetches: int
    key_visits: int  # sum over steps of the block's keys (first-pass steps separately below)
    first_pass_visits: int  # int8: keys visited by maximum-only first passes


@dataclass(frozen=True)
class AttentionGeometry:
    """The sizes an attention's tiling depends on."""

    dtype: str
    batch: int
    heads: int
    kv_heads: int
    kv_div: int
    q_len: int
    kv_len: int
    qk_dim: int
    v_dim: int
    causal: str
    elem: int  # bytes of a Q, K, V and O element
    mask: tuple[bool, bool, bool] | None  # the mask varies along (head, row, key); None: no mask
    lower_bound: int
    cores: int
    int8_kv: tuple[bool, bool] = (False, False)  # K, V int8 in L2, dequantized in L1 (fp32 only)

    # -- the schedule ------------------------------------------------------------------------

    def visible(self, i):
        """How many keys query row(s) i see (NumPy-friendly)."""
        i = np.asarray(i)
        if self.causal == "top_left":
            n = i + 1
        elif self.causal == "bottom_right":
            n = i + 1 + self.kv_len - self.q_len
        else:
            n = np.full_like(i, self.kv_len)
        return np.clip(n, 0, self.kv_len)

    @property
    def k_elem(self) -> int:
        """Bytes of a K element as fetched (int8 when dequantized in L1)."""
        return 1 if self.int8_kv[0] else self.elem

    @property
    def v_elem(self) -> int:
        return 1 if self.int8_kv[1] else self.elem

    def kv_head(self, h: int) -> int:
        return (h // self.kv_div) % self.kv_heads

    def head_blocks(self, tile_h: int) -> HeadBlocks:
        spans, mask_heads = [], []
        for h0 in range(0, self.heads, tile_h):
            nh = min(tile_h, self.heads - h0)
            kv = [self.kv_head(h) for h in range(h0, h0 + nh)]
            spans.append(max(kv) - min(kv) + 1)
            mask_heads.append(nh if self.mask and self.mask[0] else 1)
        return HeadBlocks(len(spans), sum(spans), max(spans), sum(mask_heads), max(mask_heads))

    @property
    def two_pass(self) -> bool:
        return self.dtype == "int8"

    def key_traffic(self, tile_q: int, tile_kv: int) -> KeyTraffic:
        q0 = np.arange(0, self.q_len, tile_q)
        nq = np.minimum(tile_q, self.q_len - q0)
        blocks = -(-self.visible(q0 + nq - 1) // tile_kv)
        passes = np.where(self.two_pass & (blocks > 1), 2, 1)
        rows = np.minimum(blocks * tile_kv, self.kv_len)  # keys in the visited blocks
        first_rows = min(tile_kv, self.kv_len)
        # Block 0 is still held when the previous row tile (same head block) visited only block 0;
        # blocks grow with the query block, so an empty earlier row tile means all before were empty.
        reused = np.zeros(len(q0), dtype=bool)
        reused[1:] = (blocks[:-1] == 1) & (blocks[1:] >= 1)
        k_rows = int((passes * rows).sum() - reused.sum() * first_rows)
        v_rows = int(rows.sum() - reused.sum() * first_rows)
        mask_elements = mask_fetches = 0
        if self.mask is not None and not self.two_pass:
            per_row = nq if self.mask[1] else 1
            per_block = rows if self.mask[2] else blocks
            mask_elements = int((per_row * per_block).sum())
            mask_fetches = int(blocks.sum())
        return KeyTraffic(
            row_tiles=len(q0), steps=int(np.maximum(1, passes * blocks).sum()), k_rows=k_rows, v_rows=v_rows,
            k_fetches=int((passes * blocks).sum() - reused.sum()), v_fetches=int(blocks.sum() - reused.sum()),
            mask_elements=mask_elements, mask_fetches=mask_fetches, key_visits=int((passes * rows).sum()),
            first_pass_visits=int(((passes - 1) * rows).sum()))

    # -- what a tiling costs -----------------------------------------------------------------

    @property
    def score_rows(self) -> int:
        """Blocks of float scores per core: fp32 scores two query heads of a K/V head together when
        kv_div >= 2 (c_kernels/attention_tiled.c, at_score_rows)."""
        return 2 if self.dtype == "float32" and self.kv_div >= 2 else 1

    def core_score_words(self, tile_kv: int) -> int:
        """4-byte words of a core's slot in the scores buffer: its score blocks, and at least the two
        words where the cores' scans of a mask meet (at_find_end)."""
        return max(2, self.score_rows * tile_kv)

    @property
    def state_words(self) -> int:
        """4-byte words of running state per (head, row): fp32 max and sum (the sum of weighted V
        accumulates in the O slot); int8 max, sum and the int32 accumulator."""
        return 2 if self.dtype == "float32" else 2 + self.v_dim

    def mask_block(self, tile_q: int, tile_kv: int) -> int:
        """Elements of a mask block per mask head."""
        if self.mask is None:
            return 0
        return (tile_q if self.mask[1] else 1) * (tile_kv if self.mask[2] else 1)

    def slot_bytes(self, tile_h: int, tile_q: int, tile_kv: int) -> dict[str, int]:
        """Aligned bytes of one slot of each L1 buffer."""
        heads = self.head_blocks(tile_h)
        rows = tile_h * tile_q
        k_elements, v_elements = heads.span_max * tile_kv * self.qk_dim, heads.span_max * tile_kv * self.v_dim
        return {
            "q": aligned(rows * self.qk_dim * self.elem),
            "k": aligned(k_elements * self.k_elem),
            "v": aligned(v_elements * self.v_elem),
            "k_f32": aligned(k_elements * 4) if self.int8_kv[0] else 0,
            "v_f32": aligned(v_elements * 4) if self.int8_kv[1] else 0,
            "mask": aligned(heads.mask_heads_max * self.mask_block(tile_q, tile_kv) * 4),
            "o": aligned(rows * self.v_dim * self.elem),
            "state": aligned(rows * self.state_words * 4),
            "scores": aligned(self.cores * self.core_score_words(tile_kv) * 4),
            "lut": LUT_BYTES if self.dtype == "int8" else 0,
        }

    def layout(self, tile_h: int, tile_q: int, tile_kv: int, kv_slots: int = 2) -> dict[str, tuple[int, int]]:
        """Byte offsets of every L1 buffer's slots (equal offsets: one slot), and "end"."""
        sizes = self.slot_bytes(tile_h, tile_q, tile_kv)
        counts = {"q": 2, "k": kv_slots, "v": kv_slots, "k_f32": 1 if sizes["k_f32"] else 0,
                  "v_f32": 1 if sizes["v_f32"] else 0, "mask": 2 if self.mask else 0, "o": 2, "state": 1,
                  "scores": 1, "lut": 1 if sizes["lut"] else 0}
        offsets, end = {}, 0
        for name, count in counts.items():
            starts = [end + i * sizes[name] for i in range(max(count, 1))]
            offsets[name] = (starts[0], starts[-1]) if count else (0, 0)
            end += count * sizes[name]
        offsets["end"] = (end, end)
        return offsets

    def l1_bytes(self, tile_h: int, tile_q: int, tile_kv: int, kv_slots: int = 2) -> int:
        return self.layout(tile_h, tile_q, tile_kv, kv_slots)["end"][0]

    def dma_bytes(self, tile_h: int, tile_q: int, tile_kv: int) -> tuple[int, int]:
        """(bytes into L1, bytes out of L1) of the schedule with these tiles."""
        heads, keys = self.head_blocks(tile_h), self.key_traffic(tile_q, tile_kv)
        into = (self.batch * self.heads * self.q_len * self.qk_dim * self.elem
                + self.batch * heads.span_sum * self.kv_bytes(keys)
                + self.batch * heads.mask_heads_sum * keys.mask_elements * 4
                + (LUT_BYTES if self.dtype == "int8" else 0))
        return into, self.batch * self.heads * self.q_len * self.v_dim * self.elem

    def kv_bytes(self, keys: KeyTraffic) -> int:
        """Bytes of K and V one K/V head of a head block fetches."""
        return keys.k_rows * self.qk_dim * self.k_elem + keys.v_rows * self.v_dim * self.v_elem

    def dequantized_elements(self, keys: KeyTraffic) -> int:
        """Elements of int8 K and V one K/V head of a head block dequantizes in L1 (each fetched one once)."""
        return keys.k_rows * self.qk_dim * self.int8_kv[0] + keys.v_rows * self.v_dim * self.int8_kv[1]

    def counts(self, tile_h: int, tile_q: int, tile_kv: int) -> tuple[int, int]:
        """(row tiles, steps) of the whole call."""
        heads, keys = self.head_blocks(tile_h), self.key_traffic(tile_q, tile_kv)
        return self.batch * heads.count * keys.row_tiles, self.batch * heads.count * keys.steps


FINE_BLOCKS = 16


def candidates(n: int) -> list[int]:
    """Tile sizes worth trying along an axis of n, largest first: for every block count up to
    FINE_BLOCKS the smallest tile that gives it (a larger tile with the same count costs L1 and saves
    nothing), then powers of two below those, for when L1 is small."""
    sizes = {-(-n // blocks) for blocks in range(1, min(n, FINE_BLOCKS) + 1)}
    smallest = min(sizes)
    sizes.update(1 << i for i in range(smallest.bit_length()) if 1 << i < smallest)
    return sorted(sizes, reverse=True)


def _mask_axes(spec: AttentionSpec) -> tuple[bool, bool, bool] | None:
    if spec.mask is None:
        return None
    s = spec.mask_strides
    return (s.head != 0 and spec.heads > 1, s.seq != 0 and spec.q_len > 1, s.feat != 0 and spec.kv_len > 1)


def _lower_bound(spec: AttentionSpec, geo: AttentionGeometry) -> int:
    """Every byte some visible score needs, loaded once, and every output byte stored once."""
    rows, elem = np.arange(spec.q_len), geo.elem
    visible = geo.visible(rows)
    keys = int(visible.max(initial=0))
    kv_used = len({(h // spec.kv_div) % spec.kv_heads for h in range(spec.heads)})
    kv_batches = spec.batch if spec.k_strides.batch else 1
    total = (spec.batch * spec.heads * spec.q_len * spec.qk_dim * elem
             + kv_batches * kv_used * keys * (spec.qk_dim * geo.k_elem + spec.v_dim * geo.v_elem)
             + spec.batch * spec.heads * spec.q_len * spec.v_dim * elem)
    axes = _mask_axes(spec)
    if axes is not None:
        per_head, per_row, per_key = axes
        if per_row and per_key:
            elements = int(visible.sum())
        elif per_key:
            elements = keys
        elif per_row:
            elements = int((visible > 0).sum())
        else:
            elements = int(keys > 0)
        total += ((spec.batch if spec.mask_strides.batch else 1) * (spec.heads if per_head else 1)
                  * elements * 4)
    if spec.dtype == "int8":
        total += LUT_BYTES
    return total


def geometry(spec: AttentionSpec, cores: int) -> AttentionGeometry:
    elem = element_bytes(spec.dtype)
    geo = AttentionGeometry(spec.dtype, spec.batch, spec.heads, spec.kv_heads, spec.kv_div, spec.q_len,
                            spec.kv_len, spec.qk_dim, spec.v_dim, spec.causal, elem, _mask_axes(spec), 0, cores,
                            (spec.k_dequant is not None, spec.v_dequant is not None))
    return AttentionGeometry(**{**geo.__dict__, "lower_bound": _lower_bound(spec, geo)})


__all__ = ["ALIGN", "AttentionGeometry", "HeadBlocks", "KeyTraffic", "LUT_BYTES", "candidates", "geometry"]
