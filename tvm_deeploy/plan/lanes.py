"""Lane words: a constant int8 B packed for `dpl_gemm_s8_lanes` (c_kernels/gemm_lanes.c).

Three columns' weights go into two 32-bit words per k step, A = b0 + 2^21 b1 and B = b2 + 2^10 b1 (mod 2^32),
so that one multiply by an activation forms 1.5 products: a MAC costs about 2 instructions instead of 3 on
cores without packed SIMD. The sums live in 21-bit lanes, so they are taken out every `k_chunk` steps, chosen
from the weights themselves so that no column's sum over a chunk can reach 2^20 whatever the int8 activations.
The price is memory: 8 bytes per 3 weights (2.67x the int8 matrix, in L2 and through the DMA).
"""

from __future__ import annotations

import numpy as np

LANES_PANEL = 6  # columns per panel: two pairs of lane words per k step
PANEL_BYTES_PER_K = 16
LANE_LIMIT = 1 << 20  # a chunk's column sum stays in [-2^20, 2^20): the 21-bit lanes
ACTIVATION_MAGNITUDE = 128  # the largest |a| of an int8 activation


def _columns(b: np.ndarray, b_transposed: bool) -> np.ndarray:
    """B as [k][n] int64."""
    return (b.T if b_transposed else b).astype(np.int64)


def lanes_chunk(b: np.ndarray, b_transposed: bool) -> int:
    """The longest k chunk (up to all of k) over which every column's sum fits its lane for any int8
    activations: ACTIVATION_MAGNITUDE * sum over the chunk of |B(k, n)| < LANE_LIMIT. 0 when even one step
    does not fit (never for int8 weights)."""
    magnitude = np.abs(_columns(b, b_transposed)) * ACTIVATION_MAGNITUDE
    k = magnitude.shape[0]
    prefix = np.concatenate([np.zeros((1, magnitude.shape[1]), np.int64), np.cumsum(magnitude, axis=0)])
    for chunk in range(k, 0, -1):
        starts = np.arange(0, k, chunk)
        ends = np.minimum(starts + chunk, k)
        if int((prefix[ends] - prefix[starts]).max(initial=0)) < LANE_LIMIT:
            return chunk
    return 0


def panels(n: int) -> int:
    return -(-n // LANES_PANEL)


def pack_lanes(b: np.ndarray, b_transposed: bool) -> np.ndarray:
    """The packed words, [panel][k][4] uint32 (the last panel's missing columns are zero weights)."""
    columns = _columns(b, b_transposed)
    k, n = columns.shape
    padded = np.zeros((k, panels(n) * LANES_PANEL), np.int64)
    padded[:, :n] = columns
    groups = padded.reshape(k, -1, 3).transpose(1, 0, 2)  # [group][k][3]
    words = np.stack([groups[..., 0] + (groups[..., 1] << 21), groups[..., 2] + (groups[..., 1] << 10)], axis=-1)
    words = words.reshape(-1, 2, k, 2).transpose(0, 2, 1, 3)  # [panel][k][group of the panel][word]
    return (words.reshape(-1) & 0xFFFFFFFF).astype(np.uint32)
