"""The NPU (an N-EUREKA-style accelerator) as the compiler sees it: weight layout and arithmetic.

The NPU runs int8 pointwise (1x1) convolutions, i.e. linear layers y = x W with constant int8 weights:
activations come from L1, weights from its own weight memory, where they stay across calls.
This module is the one definition of what it computes; the functional model behind the C driver
(c_kernels/npu_model.c) is bit-exact against `npu_linear`, and so is the cluster's int8 GEMM for the
same layer, because the arithmetic below is the cluster's "fixed" requantization.

Weight layout: output channels in groups of CHANNEL_GROUP (the width of the NPU's MAC array, its
natural tile granularity), the last group padded with zero weights; within a group, input channel by
input channel, the group's weights side by side:
    packed[g, kk, c] = W[kk, g * CHANNEL_GROUP + c]       (shape [groups, k, CHANNEL_GROUP], int8)
So a block of whole groups is contiguous, and each input activation meets CHANNEL_GROUP weights.

Arithmetic, per output row r and channel c (int32 unless said):
    acc = bias[c] + sum_kk x[r, kk] * W[kk, c]              (input zero point folded into bias)
    y = clamp(((int64) acc * mul[c] + 2^(shift[c]-1)) >> shift[c]) + out_zp, lo, hi)   (int8)
"""

from __future__ import annotations

import numpy as np

from ..offload import reference
from .platforms import NPU_CHANNEL_GROUP

CHANNEL_GROUP = NPU_CHANNEL_GROUP


def packed_size(k: int, n: int) -> int:
    """Bytes of a k x n weight matrix in the NPU's layout."""
    return -(-n // CHANNEL_GROUP) * CHANNEL_GROUP * k


def pack_weights(weights: np.ndarray, transposed: bool = False) -> np.ndarray:
    """W [k, n] (or [n, k] when `transposed`) as the NPU reads it: int8 [groups, k, CHANNEL_GROUP]."""
    w = np.asarray(weights)
    if w.dtype != np.int8 or w.ndim != 2:
        raise ValueError(f"NPU weights must be a 2-D int8 matrix, got {w.dtype} {w.shape}")
    if transposed:
        w = w.T
    k, n = w.shape
    groups = -(-n // CHANNEL_GROUP)
    padded = np.zeros((k, groups * CHANNEL_GROUP), np.int8)
    padded[:, :n] = w
    return np.ascontiguousarray(padded.reshape(k, groups, CHANNEL_GROUP).transpose(1, 0, 2))


def unpack_weights(packed: np.ndarray, n: int) -> np.ndarray:
    """The [k, n] matrix a packed array holds (the inverse of `pack_weights`)."""
    groups, k, width = packed.shape
    return packed.transpose(1, 0, 2).reshape(k, groups * width)[:, :n]


def npu_linear(x: np.ndarray, packed: np.ndarray, n: int, bias, mul, shift, out_zp: int = 0,
               lo: int = -128, hi: int = 127) -> np.ndarray:
    """What the NPU computes for int8 activations x [rows, k] and packed weights (see module doc)."""
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"NPU activations must be int8, got {x.dtype}")
    w = unpack_weights(packed, n).astype(np.int64)
    acc = x.astype(np.int64) @ w
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    if acc.min(initial=0) < -(2**31) or acc.max(initial=0) >= 2**31:
        raise ValueError("NPU accumulator overflows int32")
    return reference.requantize_fixed(acc.astype(np.int32), mul, shift, out_zp, lo, hi)
