"""NumPy reference semantics of the deeploy C kernels (c_kernels/dpl_kernels.h).

This module is the one definition of the integer arithmetic: the int8 GEMM kernel
(`dpl_gemm_s8`) and its three requantization modes are bit-exact against `gemm_s8`,
`requantize_fixed` and `requantize_int_ops` here, and the tests assert equality, not closeness.

Integer semantics, in order:

* accumulator: ``acc[m, n] = sum_k (a[m, k] - a_zp) * (B[k, n] - b_zp)``, computed exactly; it
  must fit int32 (guaranteed when ``k * 65025 < 2**31`` and the zero points are int8 values).
* bias: ``acc + bias[n]`` as an int32 add (wraps modulo 2**32), in every mode.
* ``"none"``: the int32 result is the output.
* ``"fixed"`` (QDQ graphs): in int64, ``t = (acc * mul[n] + 2**(shift[n]-1)) >> shift[n]``
  (round half up, arithmetic shift, ``1 <= shift <= 62``), ``t + out_zp``, clamp to ``[lo, hi]``,
  int8.
* ``"int_ops"`` (integer graphs, TVM int32 op semantics): ``t = acc * mul[n]``, ``t + add[n]``,
  ``t >> shift[n]`` (arithmetic, ``0 <= shift <= 31``), ``t + out_zp``, each in int32 with
  wrap-around, each of mul/add/shift skipped when None; clamp to ``[lo, hi]``, int8.

The float references (`softmax_f32`, `attention_f32`) are for tolerance checks only: they compute
in float64 and return float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Requant",
    "attention_f32",
    "gemm_s8",
    "quantize_multiplier",
    "requantize_fixed",
    "requantize_int_ops",
    "softmax_f32",
]

_I32_MIN = -(2**31)
_I32_MAX = 2**31 - 1
_MODES = ("none", "fixed", "int_ops")
_CAUSAL = ("none", "top_left", "bottom_right")


def _wrap_i32(x: np.ndarray) -> np.ndarray:
    """Reduce int64 values modulo 2**32 into the int32 range (two's-complement wrap-around)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + 2**31) % 2**32 - 2**31).astype(np.int64)


def _as_i32_vector(name: str, x, n: int) -> np.ndarray:
    """A per-output-channel int32 parameter as an int64 array broadcastable against [..., n]."""
    arr = np.asarray(x)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.shape[0] not in (1, n):
        raise ValueError(f"{name} must have shape [{n}] or [1], got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < _I32_MIN or arr.max() > _I32_MAX):
        raise ValueError(f"{name} has values outside int32")
    return arr


def _as_i32_acc(acc) -> np.ndarray:
    arr = np.asarray(acc)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"acc must be an integer array, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.ndim == 0:
        raise ValueError("acc must have at least one axis (the output channel axis)")
    if arr.size and (arr.min() < _I32_MIN or arr.max() > _I32_MAX):
        raise ValueError("acc has values outside int32")
    return arr


def _check_int(name: str, value, lo: int, hi: int) -> int:
    v = int(value)
    if v != value or not lo <= v <= hi:
        raise ValueError(f"{name}={value!r} must be an integer in [{lo}, {hi}]")
    return v


def _clamp_to_i8(t: np.ndarray, lo, hi) -> np.ndarray:
    lo = _check_int("lo", lo, -128, 127)
    hi = _check_int("hi", hi, -128, 127)
    # max then min, exactly like the C (if lo > hi everything becomes hi)
    return np.minimum(np.maximum(t, lo), hi).astype(np.int8)


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point form of positive scale(s): ``real ~= mul * 2**-shift``.

    ``real`` is a positive float or a 1-D array of them. Returns ``(mul, shift)`` as 1-D int32
    arrays (a scalar gives 1-element arrays) with ``2**30 <= mul < 2**31`` (``real * 2**shift``
    rounded to nearest, halves up) and ``1 <= shift <= 62``. When the shift would have to exceed
    62 (tiny ``real``), shift is 62 and ``mul = round(real * 2**62)``, which may be small or 0.
    Raises ValueError for ``real <= 0``, non-finite ``real`` or ``real >= 2**30`` (including
    values that round up to ``2**30``).
    """
    r = np.asarray(real, dtype=np.float64)
    if r.ndim == 0:
        r = r.reshape(1)
    if r.ndim != 1:
        raise ValueError(f"real must be a scalar or a 1-D array, got shape {r.shape}")
    muls = np.empty(r.shape, dtype=np.int32)
    shifts = np.empty(r.shape, dtype=np.int32)
    for i, x in enumerate(r.tolist()):
        if not np.isfinite(x) or x <= 0.0:
            raise ValueError(f"quantize_multiplier: real={x!r} must be positive and finite")
        if x >= 2.0**30:
            raise ValueError(f"quantize_multiplier: real={x!r} must be < 2**30")
        frac, exp = np.frexp(x)  # x = frac * 2**exp, 0.5 <= frac < 1
        shift = 31 - int(exp)
        if shift > 62:
            shift = 62
            mul = int(np.floor(np.ldexp(x, 62) + 0.5))
        else:
            mul = int(np.floor(np.ldexp(float(frac), 31) + 0.5))  # exact: frac has 53 bits
            if mul == 2**31:  # the mantissa rounded up to the next power of two
                mul = 2**30
                shift -= 1
        if shift < 1:
            raise ValueError(f"quantize_multiplier: real={x!r} rounds to 2**30, too large")
        muls[i] = mul
        shifts[i] = shift
    return muls, shifts


def requantize_fixed(acc, mul, shift, out_zp, lo=-128, hi=127) -> np.ndarray:
    """FIXED mode: ``clamp(((acc * mul + 2**(shift-1)) >> shift) + out_zp, lo, hi)`` in int64.

    ``acc`` is int32 ``[..., n]``; ``mul`` and ``shift`` have length n or 1 and broadcast along the
    last axis. Returns int8.
    """
    acc64 = _as_i32_acc(acc)
    n = acc64.shape[-1]
    mul64 = _as_i32_vector("mul", mul, n)
    sh64 = _as_i32_vector("shift", shift, n)
    if sh64.size and (sh64.min() < 1 or sh64.max() > 62):
        raise ValueError("shift must be in [1, 62] for the fixed mode")
    zp = _check_int("out_zp", out_zp, _I32_MIN, _I32_MAX)
    # |acc * mul| <= 2**62 and the rounding term is <= 2**61: no int64 overflow.
    t = acc64 * mul64
    t = (t + np.left_shift(np.int64(1), sh64 - 1)) >> sh64  # >> on int64 is arithmetic
    t = t + zp
    return _clamp_to_i8(t, lo, hi)


def requantize_int_ops(acc, mul, add, shift, out_zp, lo=-128, hi=127) -> np.ndarray:
    """INT_OPS mode: TVM int32 ops with wrap-around; ``mul``/``add``/``shift`` may be None (skipped).

    ``t = acc * mul; t = t + add; t = t >> shift; t = t + out_zp`` (each int32, wrapping), then
    clamp to ``[lo, hi]``. Parameters have length n or 1 and broadcast along the last axis of
    ``acc`` (int32 ``[..., n]``). Returns int8.
    """
    t = _as_i32_acc(acc)
    n = t.shape[-1]
    if mul is not None:
        t = _wrap_i32(t * _as_i32_vector("mul", mul, n))  # |product| <= 2**62 fits int64
    if add is not None:
        t = _wrap_i32(t + _as_i32_vector("add", add, n))
    if shift is not None:
        sh = _as_i32_vector("shift", shift, n)
        if sh.size and (sh.min() < 0 or sh.max() > 31):
            raise ValueError("shift must be in [0, 31] for the int_ops mode")
        t = t >> sh  # arithmetic; t is already in int32 range
    zp = _check_int("out_zp", out_zp, _I32_MIN, _I32_MAX)
    t = _wrap_i32(t + zp)
    return _clamp_to_i8(t, lo, hi)


@dataclass(frozen=True)
class Requant:
    """How an int8 GEMM turns its int32 accumulator into its output (see the module docstring).

    mode: "none" (int32 output, acc + bias), "fixed" (needs mul and shift) or "int_ops"
    (any of mul/add/shift may be None). bias, when given, is added first in every mode.
    """

    mode: str
    bias: np.ndarray | None = None
    mul: np.ndarray | None = None
    add: np.ndarray | None = None
    shift: np.ndarray | None = None
    out_zp: int = 0
    lo: int = -128
    hi: int = 127

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"Requant.mode={self.mode!r} must be one of {_MODES}")
        if self.mode == "fixed" and (self.mul is None or self.shift is None):
            raise ValueError("Requant mode 'fixed' needs mul and shift")
        if self.mode == "fixed" and self.add is not None:
            raise ValueError("Requant mode 'fixed' has no add step")


def gemm_s8(a, b, a_zp=0, b_zp=0, requant: Requant | None = None, b_transposed=False) -> np.ndarray:
    """Reference of ``dpl_gemm_s8``.

    ``a`` int8 ``[m, k]``, ``b`` int8 ``[k, n]`` (``[n, k]`` if ``b_transposed``). Returns int32
    ``[m, n]`` for mode "none" (also when ``requant`` is None: no bias), int8 otherwise.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype != np.int8 or b.dtype != np.int8:
        raise ValueError(f"a and b must be int8, got {a.dtype} and {b.dtype}")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError("a and b must be 2-D")
    bk = b.T if b_transposed else b
    if a.shape[1] != bk.shape[0]:
        raise ValueError(f"inner dimensions differ: a {a.shape}, b {b.shape}, b_transposed={b_transposed}")
    a_zp = _check_int("a_zp", a_zp, _I32_MIN, _I32_MAX)
    b_zp = _check_int("b_zp", b_zp, _I32_MIN, _I32_MAX)
    acc = (a.astype(np.int64) - a_zp) @ (bk.astype(np.int64) - b_zp)  # exact in int64
    assert acc.size == 0 or (acc.min() >= _I32_MIN and acc.max() <= _I32_MAX), (
        "accumulator overflows int32"
    )
    rq = requant if requant is not None else Requant("none")
    n = acc.shape[1]
    if rq.bias is not None:
        acc = _wrap_i32(acc + _as_i32_vector("bias", rq.bias, n))
    if rq.mode == "none":
        return acc.astype(np.int32)
    if rq.mode == "fixed":
        return requantize_fixed(acc, rq.mul, rq.shift, rq.out_zp, rq.lo, rq.hi)
    return requantize_int_ops(acc, rq.mul, rq.add, rq.shift, rq.out_zp, rq.lo, rq.hi)


def softmax_f32(x) -> np.ndarray:
    """Softmax over the last axis (max-subtracted), computed in float64, returned as float32."""
    x64 = np.asarray(x, dtype=np.float64)
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def attention_f32(q, k, v, scale, mask=None, causal="none", kv_heads=None) -> np.ndarray:
    """Reference of ``dpl_attention_f32`` in (batch, heads, seq, dim) layout.

    ``q`` is ``[b, h, q_len, d]``, ``k`` ``[b, kv_heads, kv_len, d]``, ``v``
    ``[b, kv_heads, kv_len, dv]``; query head h reads kv head ``h // (h_total // kv_heads)``.
    ``mask`` is additive and broadcasts to ``[b, h, q_len, kv_len]``. ``causal`` is "none",
    "top_left" (query i sees keys j <= i) or "bottom_right" (j <= i + kv_len - q_len); hidden keys
    get weight 0, and a row with no visible key, or whose visible scores are all -inf, is 0.
    Computed in float64, returned as float32.
    """
    if causal not in _CAUSAL:
        raise ValueError(f"causal={causal!r} must be one of {_CAUSAL}")
    q64 = np.asarray(q, dtype=np.float64)
    k64 = np.asarray(k, dtype=np.float64)
    v64 = np.asarray(v, dtype=np.float64)
    heads = q64.shape[1]
    kvh = k64.shape[1] if kv_heads is None else int(kv_heads)
    if k64.shape[1] != kvh or v64.shape[1] != kvh or heads % kvh:
        raise ValueError(f"kv_heads={kvh} does not fit q {q64.shape}, k {k64.shape}, v {v64.shape}")
    group = heads // kvh
    k64 = np.repeat(k64, group, axis=1)
    v64 = np.repeat(v64, group, axis=1)
    q_len, kv_len = q64.shape[2], k64.shape[2]
    if kv_len == 0:
        return np.zeros(q64.shape[:3] + v64.shape[3:], dtype=np.float32)

    scores = (q64 @ np.swapaxes(k64, -1, -2)) * float(scale)
    if mask is not None:
        scores = scores + np.asarray(mask, dtype=np.float64)
    scores = np.broadcast_to(scores, q64.shape[:2] + (q_len, kv_len)).copy()

    i = np.arange(q_len)[:, None]
    j = np.arange(kv_len)[None, :]
    if causal == "top_left":
        visible = j <= i
    elif causal == "bottom_right":
        visible = j <= i + (kv_len - q_len)
    else:
        visible = np.ones((q_len, kv_len), dtype=bool)
    visible = np.broadcast_to(visible, scores.shape)

    scores = np.where(visible, scores, -np.inf)
    mx = scores.max(axis=-1, keepdims=True)  # NaN if a visible score is NaN: it propagates
    empty = mx == -np.inf  # no visible key, or every visible score is -inf
    e = np.where(visible, np.exp(scores - np.where(empty, 0.0, mx)), 0.0)
    denom = e.sum(axis=-1, keepdims=True)
    p = np.where(empty, 0.0, e / np.where(empty, 1.0, denom))
    return (p @ v64).astype(np.float32)
