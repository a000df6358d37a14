"""How far the integer attention (reference.attention_s8, which the kernel matches bit for bit) is from
float attention: the figures the README states, the tests bound and scripts/bench_attention.py prints.

The float result is the exact (float64) attention of the dequantized int8 inputs, in output units
(divided by the output scale, plus the zero point). Errors are in output LSB, against that result
rounded to int8 ("rounded": what a perfect float kernel would output) and unrounded ("real").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import reference


@dataclass(frozen=True)
class ErrorFigures:
    kind: str
    shape: tuple[int, ...]  # (heads, q_len, kv_len, head_dim)
    causal: str
    max_lsb: int  # largest |ours - rounded float|
    mean_lsb: float
    differing: float  # fraction of outputs that differ from the rounded float result
    max_real_lsb: float  # largest |ours - unrounded float|
    mean_real_lsb: float
    peak_weight: float  # mean over rows of the largest softmax weight (1: one-hot)


def _instance(rng, kind, heads, q_len, kv_len, head_dim, causal):
    q = rng.integers(-128, 128, (1, heads, q_len, head_dim)).astype(np.int8)
    k = rng.integers(-128, 128, (1, heads, kv_len, head_dim)).astype(np.int8)
    v = rng.integers(-128, 128, (1, heads, kv_len, head_dim)).astype(np.int8)
    qk_scale = {"random": 0.03, "peaked": 0.25}[kind] / np.sqrt(np.sqrt(head_dim))
    zq, zk, zv, zo = 3, -2, 1, -4
    v_scale, scale = 0.02, 1.0 / np.sqrt(head_dim)
    qf = qk_scale * (q.astype(np.float64) - zq)
    kf = qk_scale * (k.astype(np.float64) - zk)
    vf = v_scale * (v.astype(np.float64) - zv)
    real = reference.attention_f32(qf, kf, vf, scale, causal=causal).astype(np.float64)
    out_scale = float(np.float32(np.abs(real).max() / 120))
    quant = reference.attention_quant(qk_scale, qk_scale, v_scale, out_scale, zq, zk, zv, zo, scale, kv_len)
    ours = reference.attention_s8(q, k, v, quant, causal).astype(np.float64)
    weights = reference.attention_f32(qf, kf, np.eye(kv_len)[None, None].repeat(heads, 1), scale, causal=causal)
    return ours, np.clip(real / out_scale + zo, -128, 127), weights.max(axis=-1)


def measure(kind: str, heads: int = 4, q_len: int = 64, kv_len: int = 64, head_dim: int = 8,
            causal: str = "none", seed: int = 0, outputs: int = 4096) -> ErrorFigures:
    """Uniform random int8 Q, K, V with zero points; "random" scales Q and K so that scores spread over
    a few units (a flat-ish softmax), "peaked" so that they spread over tens (nearly one-hot rows).
    The output scale fits each instance's float result into int8. Instances are drawn until at least
    `outputs` outputs are compared."""
    rng = np.random.default_rng(seed)
    ours, real, peaks = [], [], []
    while sum(x.size for x in ours) < outputs:
        o, r, p = _instance(rng, kind, heads, q_len, kv_len, head_dim, causal)
        ours.append(o.reshape(-1))
        real.append(r.reshape(-1))
        peaks.append(p.reshape(-1))
    ours, real, peaks = np.concatenate(ours), np.concatenate(real), np.concatenate(peaks)
    diff = np.abs(ours - np.round(real))
    return ErrorFigures(kind, (heads, q_len, kv_len, head_dim), causal, int(diff.max()), float(diff.mean()),
                        float((diff > 0).mean()), float(np.abs(ours - real).max()), float(np.abs(ours - real).mean()),
                        float(peaks.mean()))


STUDY = [  # (kind, heads, q_len, kv_len, head_dim, causal)
    ("random", 16, 64, 64, 4, "top_left"),   # microLlama prompt
    ("random", 16, 1, 256, 4, "none"),       # microLlama decode
    ("random", 8, 64, 64, 8, "top_left"),    # stories260K prompt
    ("random", 8, 1, 512, 8, "none"),        # stories260K decode, full context
    ("peaked", 16, 64, 64, 4, "top_left"),
    ("peaked", 16, 1, 256, 4, "none"),
    ("peaked", 8, 64, 64, 8, "top_left"),
    ("peaked", 8, 1, 512, 8, "none"),
]


def study(seed: int = 0) -> list[ErrorFigures]:
    return [measure(kind, h, ql, kl, d, causal, seed) for kind, h, ql, kl, d, causal in STUDY]
