"""Plain-data descriptions of the ops the deeploy codegen runs.

`describe` turns a matched Relax call tree into one of these; `emit` turns them into C.
Nothing here refers to TVM objects, so later stages (tiling, memory planning) take them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .reference import AttentionQuant, Quant, Requant
from .registry import family_of


@dataclass(frozen=True)
class Operand:
    """A tensor an op reads: a parameter of the offloaded function, or a constant baked into the C."""

    shape: tuple[int, ...]
    dtype: str
    param: int | None = None
    const: np.ndarray | None = field(default=None, compare=False)

    @property
    def is_const(self) -> bool:
        return self.const is not None


@dataclass(frozen=True)
class GemmSpec:
    """y[batch..., m, n] = A[batch..., m, k] x B[batch..., k, n] (+ bias), fp32 or int8.

    Batch dims follow NumPy broadcasting; `a_batch_strides` and `b_batch_strides` give, per output
    batch dim, the element stride into A and B (0 where that operand is broadcast).
    For int8, `requant` says how the int32 accumulator becomes the output (see reference.Requant).
    """

    dtype: str  # "float32" or "int8" (operand type)
    out_dtype: str  # "float32", "int32" or "int8"
    batch: tuple[int, ...]
    m: int
    n: int
    k: int
    a: Operand
    b: Operand
    b_transposed: bool
    a_batch_strides: tuple[int, ...]
    b_batch_strides: tuple[int, ...]
    bias: np.ndarray | None = field(default=None, compare=False)  # fp32 only: [n]
    a_zp: int = 0
    b_zp: int = 0
    requant: Requant | None = field(default=None, compare=False)

    kind = "gemm"

    @property
    def macs(self) -> int:
        return int(np.prod(self.batch, dtype=np.int64)) * self.m * self.n * self.k

    def batch_offsets(self, operand: str) -> list[int]:
        """Element offset of each flattened batch's A (operand "a") or B ("b")."""
        strides = self.a_batch_strides if operand == "a" else self.b_batch_strides
        return [int(sum(i * s for i, s in zip(index, strides))) for index in np.ndindex(*self.batch)]


@dataclass(frozen=True)
class SoftmaxSpec:
    """Softmax over the last axis of a float32 tensor viewed as rows x cols."""

    x: Operand
    rows: int
    cols: int

    kind = "softmax"


@dataclass(frozen=True)
class Strides:
    """Element strides of a (batch, head, seq, feature) view; 0 broadcasts that axis."""

    batch: int
    head: int
    seq: int
    feat: int


@dataclass(frozen=True)
class AttentionSpec:
    """softmax(Q K^T * scale + mask [causal]) V per batch and query head, strided operands.

    Query head h reads K/V head ``(h // kv_div) % kv_heads``; `k_strides` and `v_strides` step over
    K/V heads of the K and V tensors as stored. fp32 ("float32"), or int8 Q, K, V and output with the
    integer constants in `quant` (then `scale` is folded into them and there is no mask). fp32 with
    `k_dequant` / `v_dequant`: that operand is int8 in L2, dequantized as TVM does (reference.dequantize_s8)
    block by block in L1."""

    q: Operand
    k: Operand
    v: Operand
    mask: Operand | None
    q_strides: Strides
    k_strides: Strides
    v_strides: Strides
    mask_strides: Strides | None
    out_strides: Strides
    out_shape: tuple[int, ...]
    batch: int
    heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    qk_dim: int
    v_dim: int
    scale: float
    causal: str  # "none", "top_left" or "bottom_right"
    kv_div: int = 1
    dtype: str = "float32"
    quant: AttentionQuant | None = field(default=None, compare=False)
    k_dequant: Quant | None = None
    v_dequant: Quant | None = None

    kind = "attention"


OpSpec = GemmSpec | SoftmaxSpec | AttentionSpec


def summary(spec: OpSpec) -> str:
    """A one-line description of an op, for comments and reports (its family's)."""
    return family_of(spec).summary(spec)
