"""NumPy reference of the Llama decoder, fp32 or int8, op for op as `llama.build_decoder` writes the graph.

    model = LlamaReference(checkpoint, quant)     # quant=None: the fp32 model
    tokens = model.generate(prompt_ids, n_tokens)  # prompt pass, then greedy decode with a KV cache

With kv_cache="int8" (needs `quant`) the cache holds int8 keys and values, quantized as they are written
(per layer one scale for keys and one for values, `LlamaQuant.kv_scales`, zero point 0); decode's
attention reads the dequantized cache, the prompt's attention its own float32 keys and values (as the
graph computes them, before the cache).

Float ops compute in float32 in the order TVM's C computes them (sequential reductions, no fused
multiply-add) and exp is the kernels' own (`reference.expf`), so the int8 model's quantize steps see the
same values as the generated C up to the last bits of the attention's float sums; the int8 linear layers
are exact integer arithmetic (`reference.gemm_s8` + `reference.requantize_fixed`), the output head an
exact int32 accumulator times a float32 scale. The generated tokens are what the standalone C program must reproduce.
"""

from __future__ import annotations

import numpy as np

from ..offload import reference
from .checkpoint import Checkpoint, rope_tables
from .quantize import LlamaQuant, QuantLinear, quantize_activation, quantize_checkpoint

RMS_EPS = 1e-5
F32 = np.float32
KV_CACHES = ("float32", "int8")


def check_kv_cache(kv_cache: str, quant) -> None:
    """The KV cache's element type: one of KV_CACHES; int8 takes its scales from `quant`."""
    if kv_cache not in KV_CACHES:
        raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHES)}, got {kv_cache!r}")
    if kv_cache == "int8" and (quant is None or not quant.kv_scales):
        raise ValueError("kv_cache='int8' needs the int8 model's KV-cache scales: pass quant=calibrate(...)")


def rms_norm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x * (1 / sqrt(mean(x^2) + eps)) * weight, summing the squares in order like TVM's C."""
    squares = x * x
    total = np.zeros(x.shape[:-1], F32)
    for j in range(x.shape[-1]):
        total = total + squares[..., j]
    inv = F32(1.0) / np.sqrt(total / F32(x.shape[-1]) + F32(RMS_EPS))
    return (inv[..., None] * x) * weight


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, heads: int) -> np.ndarray:
    """Rotate interleaved pairs (2i, 2i+1) of each head of x [tokens, heads * head_dim]; cos, sin
    [tokens, head_dim / 2]."""
    tokens = x.shape[0]
    pairs = x.reshape(tokens, heads, -1, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    c, s = cos[:, None, :], sin[:, None, :]
    out = np.stack([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)
    return out.reshape(tokens, -1)


def silu(x: np.ndarray) -> np.ndarray:
    """TVM's silu with the kernels' exp (`reference.expf`, bit-exact with c_kernels' dpl_expf)."""
    return x * (F32(1.0) / (F32(1.0) + reference.expf(F32(0.0) - x)))


def qdq_linear(x: np.ndarray, layer: QuantLinear) -> np.ndarray:
    """quantize -> int8 GEMM with fixed-point requantization -> dequantize (float32)."""
    x_q = quantize_activation(x, layer.in_scale)
    mul, shift = layer.requant()
    y_q = reference.gemm_s8(x_q, layer.weight, requant=reference.Requant("fixed", mul=mul, shift=shift, out_zp=0))
    return y_q.astype(F32) * F32(layer.out_scale)


def int8_head(x: np.ndarray, layer: QuantLinear) -> np.ndarray:
    acc = reference.gemm_s8(quantize_activation(x, layer.in_scale), layer.weight)
    return acc.astype(F32) * layer.logit_scale()


class LlamaReference:
    """The decoder with its KV cache ([layers, kv_heads, context, head_dim] of `kv_cache`, keys after RoPE)."""

    def __init__(self, checkpoint: Checkpoint, quant: LlamaQuant | None = None, kv_cache: str = "float32"):
        check_kv_cache(kv_cache, quant)
        self.config, self.weights, self.quant, self.kv_cache = checkpoint.config, checkpoint.weights, quant, kv_cache
        c = self.config
        self.cos, self.sin = rope_tables(c.head_dim, c.seq_len)
        shape = (c.n_layers, c.n_kv_heads, c.seq_len, c.head_dim)
        self.k_cache, self.v_cache = np.zeros(shape, kv_cache), np.zeros(shape, kv_cache)
        self.position = 0
        self.maxima: dict[str, float] = {}  # largest |input| and |output| of every linear layer seen

    def _linear(self, name: str, x: np.ndarray) -> np.ndarray:
        layer_index, _, kind = name.partition(".")
        if self.quant is not None:
            if name == "head":
                return int8_head(x, self.quant.head)
            return qdq_linear(x, self.quant.layers[int(layer_index)][kind])
        weight = self.weights.wcls if name == "head" else getattr(self.weights, kind)[int(layer_index)]
        y = (x.astype(np.float64) @ weight.T.astype(np.float64)).astype(F32)
        self._record(f"{name}.in", x)
        self._record(f"{name}.out", y)
        return y

    def _record(self, key: str, x: np.ndarray) -> None:
        self.maxima[key] = max(self.maxima.get(key, 0.0), float(np.abs(x).max()))

    def _write_cache(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """k, v [tokens, kv_heads, head_dim] into the cache at positions start.., quantized for an int8 cache."""
        if self.kv_cache == "int8":
            k_scale, v_scale = self.quant.kv_scales[layer]
            k, v = quantize_activation(k, k_scale), quantize_activation(v, v_scale)
        self.k_cache[layer, :, start:start + len(k)] = k.transpose(1, 0, 2)
        self.v_cache[layer, :, start:start + len(v)] = v.transpose(1, 0, 2)

    def _cached(self, layer: int, keys: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `keys` keys and values of the cache, float32 [kv_heads, keys, head_dim]."""
        k, v = self.k_cache[layer, :, :keys], self.v_cache[layer, :, :keys]
        if self.kv_cache == "int8":
            k_scale, v_scale = self.quant.kv_scales[layer]
            return k.astype(F32) * k_scale, v.astype(F32) * v_scale
        return k, v

    def _attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        """q [tokens, dim] against k, v [kv_heads, keys, head_dim], causal from the last key back."""
        c = self.config
        tokens = q.shape[0]
        q = q.reshape(tokens, c.n_heads, c.head_dim).transpose(1, 0, 2)[None]
        att = reference.attention_f32(q, k[None], v[None], 1.0 / np.sqrt(c.head_dim), causal="bottom_right",
                                      kv_heads=c.n_kv_heads)
        return att[0].transpose(1, 0, 2).reshape(tokens, c.dim)

    def forward(self, tokens, start: int) -> np.ndarray:
        """Run `tokens` at positions start.. (writing their keys and values into the cache); the logits
        of the last one, float32 [vocab]."""
        c, w = self.config, self.weights
        tokens = np.asarray(tokens, np.int64).reshape(-1)
        n = len(tokens)
        if start + n > c.seq_len:
            raise ValueError(f"positions {start}..{start + n - 1} exceed the context of {c.seq_len}")
        cos, sin = self.cos[start:start + n], self.sin[start:start + n]
        x = w.token_embedding[tokens]
        for i in range(c.n_layers):
            h = rms_norm(x, w.rms_att[i])
            q = rope(self._linear(f"{i}.wq", h), cos, sin, c.n_heads)
            k = rope(self._linear(f"{i}.wk", h), cos, sin, c.n_kv_heads)
            v = self._linear(f"{i}.wv", h)
            k, v = k.reshape(n, c.n_kv_heads, c.head_dim), v.reshape(n, c.n_kv_heads, c.head_dim)
            if self.quant is None:
                self._record(f"{i}.k", k)
                self._record(f"{i}.v", v)
            self._write_cache(i, start, k, v)
            # the prompt (from position 0) attends to its own keys; decode to the cache
            k, v = (k.transpose(1, 0, 2), v.transpose(1, 0, 2)) if start == 0 else self._cached(i, start + n)
            x = x + self._linear(f"{i}.wo", self._attention(q, k, v))
            h = rms_norm(x, w.rms_ffn[i])
            gated = silu(self._linear(f"{i}.w1", h)) * self._linear(f"{i}.w3", h)
            x = x + self._linear(f"{i}.w2", gated)
        self.position = start + n
        return self._linear("head", rms_norm(x[-1:], w.rms_final))[0]

    def prompt(self, tokens) -> np.ndarray:
        return self.forward(tokens, 0)

    def decode(self, token: int) -> np.ndarray:
        return self.forward([token], self.position)

    def generate(self, prompt_tokens, n_tokens: int) -> list[int]:
        """Greedy: the argmax after the prompt, then n_tokens - 1 decode steps (first index on ties)."""
        tokens = [int(np.argmax(self.prompt(prompt_tokens)))]
        while len(tokens) < n_tokens:
            tokens.append(int(np.argmax(self.decode(tokens[-1]))))
        return tokens


def calibrate(checkpoint: Checkpoint, prompt_tokens) -> LlamaQuant:
    """Run the fp32 model on the prompt and quantize with the activation ranges it saw."""
    model = LlamaReference(checkpoint)
    model.prompt(prompt_tokens)
    return quantize_checkpoint(checkpoint, model.maxima)


__all__ = ["LlamaReference", "calibrate", "qdq_linear", "rms_norm", "rope", "silu"]
