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

Integer attention (``attention_s8``, the kernel ``dpl_attention_tiled`` with DPL_S8): int8 Q, K, V
with per-tensor scales and zero points, an integer-only softmax, int8 output. Per query row i, with
the keys j it sees (causal masking), in exact integer arithmetic:

* score: ``s[j] = sum_c (q[i, c] - q_zp) * (k[j, c] - k_zp)`` (int32), and the row maximum ``m``;
* exponent: ``t[j] = ((m - s[j]) * exp_mul + 2**(exp_shift-1)) >> exp_shift``, the distance from the
  maximum in powers of two with 8 fractional bits (``exp_mul * 2**-exp_shift`` is
  ``q_scale * k_scale * scale * log2(e) * 256``); with ``n = (t >> 8) + e_shift``,
  ``e[j] = (EXP2_LUT[t & 255] + (2**n >> 1)) >> n`` (rounded), 0 when ``n >= 17``;
  ``EXP2_LUT[f] = round(2**15 * 2**(-f/256))``. So ``e[j]`` is
  ``2**(15 - e_shift) * exp(real score - real maximum)``, to 0.14 %;
* sums: ``l = sum_j e[j]`` and ``a[c] = sum_j e[j] * (v[j, c] - v_zp)`` (int32: ``e_shift`` is the
  smallest that keeps ``255 * kv_len * 2**(15 - e_shift) < 2**31``);
* output: ``inv = 2**46 // l``, ``w = (a * inv) >> 30`` (the weighted mean of ``v - v_zp`` with 16
  fractional bits), ``y = out_zp + ((w * out_mul + 2**(out_shift+15)) >> (out_shift+16))`` with
  ``out_mul * 2**-out_shift = v_scale / out_scale``, clamped to ``[lo, hi]``; a row that sees no key
  gives ``clamp(out_zp)``.

Shifts are arithmetic (floor). The kernel works on key blocks when K and V do not fit L1: a first
pass over the blocks finds ``m`` exactly, a second computes the sums, which are exact integer sums,
so the result does not depend on the blocking (unlike a float online softmax, no rescaling happens).

`softmax_f32` is bit-exact against ``dpl_softmax_f32``; `attention_f32` is for tolerance checks only: it
computes in float64 and returns float32. `expf` is the kernels' exp (``dpl_expf``), bit-exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "EXP2_LUT",
    "AttentionQuant",
    "Quant",
    "Requant",
    "attention_f32",
    "attention_quant",
    "attention_s8",
    "dequantize_s8",
    "expf",
    "gemm_s8",
    "qdq_requant",
    "quantize_multiplier",
    "quantize_s8",
    "requantize_fixed",
    "requantize_int_ops",
    "residual_add",
    "rms_norm",
    "rope",
    "silu_table",
    "softmax_f32",
    "swiglu",
]

_I32_MIN = -(2**31)
_I32_MAX = 2**31 - 1
_MODES = ("none", "fixed", "int_ops")
_CAUSAL = ("none", "top_left", "bottom_right")

# Integer softmax constants (see the module docstring).
EXP_FRAC_BITS = 8  # t counts powers of two in steps of 1/256
EXP_LUT_BITS = 15  # EXP2_LUT[0] = 2**15
ATTENTION_RECIP_BITS = 46  # inv = 2**46 // l
ATTENTION_MEAN_BITS = 16  # fractional bits of the weighted mean w
EXP_ZERO_SHIFT = EXP_LUT_BITS + 2  # from this shift on, (lut + 2**n >> 1) >> n is 0 for every entry


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


def qdq_requant(in_scale, weight_scales, out_scale) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A QDQ linear layer's fixed-point requantization: ``(acc_scale, mul, shift)``, where ``acc_scale``
    is the real value of one accumulator unit per output column (the float32 scales multiplied exactly
    in float64) and ``mul * 2**-shift`` approximates ``acc_scale / out_scale``."""
    acc_scale = np.float64(in_scale) * np.asarray(weight_scales).astype(np.float64)
    mul, shift = quantize_multiplier(acc_scale / np.float64(out_scale))
    return acc_scale, mul, shift


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


# ---- The element-wise and row-wise ops of a transformer layer (dpl_residual_add, dpl_rms_norm, dpl_swiglu,
# dpl_rope): float32 ops in the order the kernels (and TVM's C) compute them, so that without a transcendental
# function the kernels are bit-exact against these; an operand or result may be int8 with a `Quant`.

F32 = np.float32

# dpl_expf (c_kernels/dpl_math.h): its constants, as float32.
_ROUND_MAGIC = F32(12582912.0)  # 1.5 * 2**23
_LOG2E = F32(1.44269504)
_LN2_HI, _LN2_LO = F32(0.693359375), F32(-2.12194440e-4)
_EXP_POLY = tuple(F32(c) for c in (0.0013835513, 0.008374849, 0.04166825, 0.1666642, 0.4999999))  # c6 .. c2


def _pow2i(n: np.ndarray) -> np.ndarray:
    """2**n for -126 <= n <= 127, from the exponent bits."""
    return np.left_shift((n + 127).astype(np.uint32), 23).view(F32)


def _expf_reduced(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(e**f, n) with x = n ln 2 + f, |x| <= 104: dpl_expf_reduced."""
    kf = (x * _LOG2E + _ROUND_MAGIC) - _ROUND_MAGIC
    f = (x - kf * _LN2_HI) - kf * _LN2_LO
    q = _EXP_POLY[0]
    for c in _EXP_POLY[1:]:
        q = q * f + c
    return F32(1.0) + (f + (f * f) * q), kf.astype(np.int32)


def expf(x) -> np.ndarray:
    """e**x in float32 exactly as the kernels' dpl_expf computes it (the same float32 operations in the same
    order, bit-exact): at most 9.531e-8 relative error on normal results (scripts/measure_expf.py)."""
    x = np.asarray(x, F32)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        inside = np.abs(x) < F32(87.0)
        edge_x = np.where(np.isnan(x), F32(0.0), np.clip(x, F32(-104.0), F32(89.0)))
        p, n = _expf_reduced(np.where(inside, x, edge_x))
        half = np.where(n > 0, 64, -64).astype(np.int32)
        edge = (p * _pow2i(np.where(inside, 0, n - half))) * _pow2i(half)
        y = np.where(inside, p * _pow2i(np.where(inside, n, 0)), edge)
        y = np.where(x > F32(89.0), F32(np.inf), np.where(x < F32(-104.0), F32(0.0), y))
        return np.where(np.isnan(x), x, y).astype(F32)


@dataclass(frozen=True)
class Quant:
    """A per-tensor int8 quantization (TVM's quantize / dequantize, c_kernels' dpl_quant_t)."""

    scale: float  # float32, positive and finite
    zp: int


def quantize_s8(x, quant: Quant) -> np.ndarray:
    """TVM's quantize: clip(nearbyint(x / scale) + zp, -128, 127) (halves to even), float32 division."""
    with np.errstate(over="ignore"):  # beyond float32: infinity, which saturates
        scaled = np.asarray(x, F32) / F32(quant.scale)
    return np.clip(np.rint(scaled) + F32(quant.zp), -128, 127).astype(np.int8)


def dequantize_s8(q, quant: Quant) -> np.ndarray:
    """TVM's dequantize: float32(int32(q) - zp) * scale."""
    return (np.asarray(q).astype(np.int32) - np.int32(quant.zp)).astype(F32) * F32(quant.scale)


def _float_operand(x, quant: Quant | None) -> np.ndarray:
    return np.asarray(x, F32) if quant is None else dequantize_s8(x, quant)


def _result(y: np.ndarray, quant: Quant | None) -> np.ndarray:
    return y if quant is None else quantize_s8(y, quant)


def residual_add(a, b, b_quant: Quant | None = None) -> np.ndarray:
    """a + b, b float32 or int8 dequantized."""
    return np.asarray(a, F32) + _float_operand(b, b_quant)


def rms_norm(x, weight, eps: float, y_quant: Quant | None = None) -> np.ndarray:
    """RMSNorm over the last axis: inv = 1 / sqrt(sum(x * x) / cols + eps) with the squares summed in order,
    y = (inv * x) * weight (TVM's rms_norm); y float32 or int8 quantized."""
    x = np.asarray(x, F32)
    squares = x * x
    total = np.zeros(x.shape[:-1], F32)
    for j in range(x.shape[-1]):
        total = total + squares[..., j]
    inv = F32(1.0) / np.sqrt(total / F32(x.shape[-1]) + F32(eps))
    return _result((inv[..., None] * x) * np.asarray(weight, F32), y_quant)


def swiglu(a, b, a_quant: Quant | None = None, b_quant: Quant | None = None,
           y_quant: Quant | None = None) -> np.ndarray:
    """silu(a) * b with TVM's silu a * (1 / (1 + exp(0 - a))), exp being `expf` (the kernels' dpl_expf)."""
    a = _float_operand(a, a_quant)
    with np.errstate(over="ignore"):  # beyond float32: infinity, as in C
        silu = a * (F32(1.0) / (F32(1.0) + expf(F32(0.0) - a)))
        return _result(silu * _float_operand(b, b_quant), y_quant)


def silu_table(quant: Quant) -> np.ndarray:
    """silu(dequantize(q)) for the int8 values q = -128 .. 127, in that order: dpl_swiglu's table for an int8
    gate (the same float32 operations as `swiglu`, so looking up is bit-exact)."""
    a = dequantize_s8(np.arange(-128, 128), quant)
    return a * (F32(1.0) / (F32(1.0) + expf(F32(0.0) - a)))


def rope(x, cos, sin, x_quant: Quant | None = None) -> np.ndarray:
    """Rotary embedding on interleaved pairs: x [..., half, 2] (float32 or int8 dequantized), cos and sin
    broadcasting onto [..., half]; y0 = x0 * cos - x1 * sin, y1 = x0 * sin + x1 * cos."""
    x = _float_operand(x, x_quant)
    x0, x1 = x[..., 0], x[..., 1]
    cos, sin = np.asarray(cos, F32), np.asarray(sin, F32)
    return np.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)


def softmax_f32(x) -> np.ndarray:
    """Softmax over the last axis as `dpl_softmax_f32` computes it in float32: e = expf(x - max), the row
    sum in order, e / sum."""
    x = np.asarray(x, F32)
    e = expf(x - x.max(axis=-1, keepdims=True))
    total = np.zeros(x.shape[:-1] + (1,), F32)
    for j in range(x.shape[-1]):
        total = total + e[..., j:j + 1]
    return e / total


def kv_head_index(heads: int, kv_heads: int, kv_div: int | None = None) -> np.ndarray:
    """The K/V head each query head reads: ``(h // kv_div) % kv_heads``.

    ``kv_div`` None is the grouped-query convention ``kv_div = heads // kv_heads`` (query heads
    0..g-1 share K/V head 0); TVM's ``R.nn.attention`` pairs head h with ``h % kv_heads`` (kv_div 1)."""
    if kv_div is None:
        if heads % kv_heads:
            raise ValueError(f"{heads} query heads do not group over {kv_heads} K/V heads")
        kv_div = heads // kv_heads
    return (np.arange(heads) // int(kv_div)) % int(kv_heads)


def _visible(q_len: int, kv_len: int, causal: str) -> np.ndarray:
    """[q_len, kv_len] bool: which keys each query sees."""
    if causal not in _CAUSAL:
        raise ValueError(f"causal={causal!r} must be one of {_CAUSAL}")
    i = np.arange(q_len)[:, None]
    j = np.arange(kv_len)[None, :]
    if causal == "top_left":
        return j <= i
    if causal == "bottom_right":
        return j <= i + (kv_len - q_len)
    return np.ones((q_len, kv_len), dtype=bool)


def attention_f32(q, k, v, scale, mask=None, causal="none", kv_heads=None, kv_div=None) -> np.ndarray:
    """Reference of ``dpl_attention_tiled`` with DPL_F32, in (batch, heads, seq, dim) layout.

    ``q`` is ``[b, h, q_len, d]``, ``k`` ``[b, kv_heads, kv_len, d]``, ``v``
    ``[b, kv_heads, kv_len, dv]``; query head h reads K/V head ``kv_head_index(h, kv_heads, kv_div)``
    (grouped by default). ``mask`` is additive and broadcasts to ``[b, h, q_len, kv_len]``. ``causal``
    is "none", "top_left" (query i sees keys j <= i) or "bottom_right" (j <= i + kv_len - q_len);
    hidden keys get weight 0, and a row with no visible key, or whose visible scores are all -inf,
    is 0. Computed in float64, returned as float32.
    """
    q64 = np.asarray(q, dtype=np.float64)
    k64 = np.asarray(k, dtype=np.float64)
    v64 = np.asarray(v, dtype=np.float64)
    heads = q64.shape[1]
    kvh = k64.shape[1] if kv_heads is None else int(kv_heads)
    if k64.shape[1] != kvh or v64.shape[1] != kvh:
        raise ValueError(f"kv_heads={kvh} does not fit k {k64.shape}, v {v64.shape}")
    index = kv_head_index(heads, kvh, kv_div)
    k64, v64 = k64[:, index], v64[:, index]
    q_len, kv_len = q64.shape[2], k64.shape[2]
    visible = _visible(q_len, kv_len, causal)
    if kv_len == 0:
        return np.zeros(q64.shape[:3] + v64.shape[3:], dtype=np.float32)

    scores = (q64 @ np.swapaxes(k64, -1, -2)) * float(scale)
    if mask is not None:
        scores = scores + np.asarray(mask, dtype=np.float64)
    scores = np.broadcast_to(scores, q64.shape[:2] + (q_len, kv_len)).copy()
    visible = np.broadcast_to(visible, scores.shape)

    scores = np.where(visible, scores, -np.inf)
    mx = scores.max(axis=-1, keepdims=True)  # NaN if a visible score is NaN: it propagates
    empty = mx == -np.inf  # no visible key, or every visible score is -inf
    e = np.where(visible, np.exp(scores - np.where(empty, 0.0, mx)), 0.0)
    denom = e.sum(axis=-1, keepdims=True)
    p = np.where(empty, 0.0, e / np.where(empty, 1.0, denom))
    return (p @ v64).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# integer attention


def _exp2_lut() -> np.ndarray:
    exact = np.ldexp(np.exp2(-np.arange(1 << EXP_FRAC_BITS) / float(1 << EXP_FRAC_BITS)), EXP_LUT_BITS)
    # Far from every rounding boundary (the closest is 2.7e-4 away), so any libm gives this table.
    assert (np.abs(exact - np.floor(exact) - 0.5) > 1e-6).all()
    return np.floor(exact + 0.5).astype(np.uint16)


EXP2_LUT = _exp2_lut()
EXP2_LUT.setflags(write=False)


@dataclass(frozen=True)
class AttentionQuant:
    """The integer constants of one int8 attention, all derived at compile time from the scales
    (see the module docstring for how each is used)."""

    q_zp: int
    k_zp: int
    v_zp: int
    out_zp: int
    exp_mul: int
    exp_shift: int
    e_shift: int
    out_mul: int
    out_shift: int
    lo: int = -128
    hi: int = 127


MAX_ATTENTION_KV_LEN = 1 << 15  # beyond this e keeps fewer than 8 bits


def attention_quant(q_scale, k_scale, v_scale, out_scale, q_zp, k_zp, v_zp, out_zp, scale, kv_len,
                    lo=-128, hi=127) -> AttentionQuant:
    """The integer constants for int8 attention with these per-tensor scales and zero points, the
    score scale ``scale`` (the real multiplier of q.k, e.g. 1/sqrt(d)) and ``kv_len`` keys.
    Raises ValueError when the integer arithmetic cannot represent them."""
    for name, zp in (("q_zp", q_zp), ("k_zp", k_zp), ("v_zp", v_zp), ("out_zp", out_zp)):
        _check_int(name, zp, -128, 127)
    scales = [float(x) for x in (q_scale, k_scale, v_scale, out_scale)]
    if not all(np.isfinite(x) and x > 0 for x in scales):
        raise ValueError(f"scales {scales} must be positive and finite")
    if not (np.isfinite(scale) and scale >= 0):
        raise ValueError(f"attention scale {scale} must be non-negative and finite")
    if not 1 <= int(kv_len) <= MAX_ATTENTION_KV_LEN:
        raise ValueError(f"kv_len={kv_len} must be in [1, {MAX_ATTENTION_KV_LEN}]")
    real = scales[0] * scales[1] * float(scale) * np.log2(np.e) * (1 << EXP_FRAC_BITS)
    if real == 0.0:
        exp_mul, exp_shift = 0, 1  # every key weighs the same
    else:
        mul, shift = quantize_multiplier(real)
        exp_mul, exp_shift = int(mul[0]), int(shift[0])
    e_shift = 0
    while 255 * int(kv_len) * (1 << (EXP_LUT_BITS - e_shift)) >= 2**31:
        e_shift += 1
    mul, shift = quantize_multiplier(scales[2] / scales[3])
    out_mul, out_shift = int(mul[0]), int(shift[0])
    if out_shift + ATTENTION_MEAN_BITS > 62:
        raise ValueError(f"v_scale / out_scale = {scales[2] / scales[3]} is too small")
    return AttentionQuant(int(q_zp), int(k_zp), int(v_zp), int(out_zp), exp_mul, exp_shift, e_shift,
                          out_mul, out_shift, _check_int("lo", lo, -128, 127), _check_int("hi", hi, -128, 127))


def exp2_weights(delta, quant: AttentionQuant) -> np.ndarray:
    """``e`` for distances ``delta = m - s >= 0`` from the row maximum (int64 array)."""
    delta = np.asarray(delta, dtype=np.int64)
    t = (delta * quant.exp_mul + (1 << (quant.exp_shift - 1))) >> quant.exp_shift
    n = np.minimum((t >> EXP_FRAC_BITS) + quant.e_shift, EXP_ZERO_SHIFT)
    lut = EXP2_LUT.astype(np.int64)[t & ((1 << EXP_FRAC_BITS) - 1)]
    return np.where(n >= EXP_ZERO_SHIFT, 0, (lut + ((1 << n) >> 1)) >> n)


def attention_s8(q, k, v, quant: AttentionQuant, causal="none", kv_heads=None, kv_div=None) -> np.ndarray:
    """Reference of ``dpl_attention_tiled`` with DPL_S8 (the module docstring defines it).

    ``q`` int8 ``[b, h, q_len, d]``, ``k`` int8 ``[b, kv_heads, kv_len, d]``, ``v`` int8
    ``[b, kv_heads, kv_len, dv]``; heads map as in `attention_f32`. Returns int8 ``[b, h, q_len, dv]``."""
    q, k, v = (np.asarray(x) for x in (q, k, v))
    if not (q.dtype == k.dtype == v.dtype == np.int8):
        raise ValueError(f"q, k, v must be int8, got {q.dtype}, {k.dtype}, {v.dtype}")
    heads = q.shape[1]
    kvh = k.shape[1] if kv_heads is None else int(kv_heads)
    index = kv_head_index(heads, kvh, kv_div)
    k, v = k[:, index], v[:, index]
    q_len, kv_len = q.shape[2], k.shape[2]
    visible = np.broadcast_to(_visible(q_len, kv_len, causal), q.shape[:2] + (q_len, kv_len))
    scores = (q.astype(np.int64) - quant.q_zp) @ np.swapaxes(k.astype(np.int64) - quant.k_zp, -1, -2)
    assert np.abs(scores).max(initial=0) < 2**30, "scores exceed the int32 range the kernel assumes"
    m = np.where(visible, scores, np.iinfo(np.int64).min).max(axis=-1, keepdims=True, initial=np.iinfo(np.int64).min)
    e = np.where(visible, exp2_weights(np.where(visible, m - scores, 0), quant), 0)
    weight_sum = e.sum(axis=-1, keepdims=True)
    acc = e @ (v.astype(np.int64) - quant.v_zp)
    assert weight_sum.max(initial=0) < 2**31 and np.abs(acc).max(initial=0) < 2**31, "sums exceed int32"
    inv = np.where(weight_sum > 0, (1 << ATTENTION_RECIP_BITS) // np.maximum(weight_sum, 1), 0)
    w = (acc * inv) >> (ATTENTION_RECIP_BITS - ATTENTION_MEAN_BITS)
    shift = quant.out_shift + ATTENTION_MEAN_BITS
    y = quant.out_zp + ((w * quant.out_mul + (1 << (shift - 1))) >> shift)
    y = np.where(weight_sum > 0, y, quant.out_zp)
    return _clamp_to_i8(y, quant.lo, quant.hi)
