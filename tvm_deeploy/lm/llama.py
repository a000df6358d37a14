"""A Llama decoder from a llama2.c checkpoint as a Relax module with two functions:

    prompt(tokens: int32[P], k_cache_0, v_cache_0, ...)                -> (logits [1, vocab], caches...)
    decode(token: int32[1], position: int32[1], k_cache_0, v_cache_0, ...) -> (logits [1, vocab], caches...)

Each cache is float32 (or int8: `kv_cache="int8"`) [1, kv_heads, context, head_dim] (keys after the
rotary embedding); a function
writes its tokens' keys and values into a layer's two caches in place (`R.call_tir_inplace` of one small
TIR function, `cache_write`, at positions 0.. for the prompt, at `position` for decode) and returns them,
so TVM's VM and the standalone C program keep the cache across calls. The logits are the last token's.

Per layer, as llama2.c computes it: RMSNorm, q/k/v projections, rotary embedding on interleaved pairs,
causal attention with grouped K/V heads (query head h reads K/V head h // (heads / kv_heads); prompt:
over the prompt's keys with a constant causal mask; decode: over the whole cache with a mask from the
position, `decode_mask`, computed once per call), output projection, residual add, RMSNorm, SwiGLU
feed-forward w2(silu(w1 h) * w3 h), residual add; then the final RMSNorm and the output head. With
`quant` every linear layer is int8 QDQ and the head an int8 GEMM with an int32 accumulator (see
`quantize`); norms, rotary embedding, SiLU, residual adds and attention stay float32. With an int8 cache
the keys and values are quantized as they are written (per-tensor scales of each layer,
`LlamaQuant.kv_scales`) and decode's attention reads the dequantized
cache. `llama_reference.LlamaReference` is the same model in NumPy.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import tirx as T

from .checkpoint import Checkpoint, rope_tables
from .llama_reference import RMS_EPS, check_kv_cache
from .quantize import LlamaQuant, QuantLinear


def kv_write(kv_heads: int, context: int, head_dim: int, tokens: int, dtype: str = "float32"):
    """TIR: cache[0, h, position + t, d] = rows[t, h * head_dim + d], in place. The position is a run-time
    input: a row outside the context is clamped to it (the C program never writes outside the cache)."""

    @T.prim_func(private=True)
    def write(cache: T.Buffer((1, kv_heads, context, head_dim), dtype),
              rows: T.Buffer((tokens, kv_heads * head_dim), dtype),
              position: T.Buffer((1,), "int32")):
        for t, h, d in T.grid(tokens, kv_heads, head_dim):
            cache[0, h, T.max(T.min(position[0] + t, context - 1), 0), d] = rows[t, h * head_dim + d]

    return write


def cache_write(kv_heads: int, context: int, head_dim: int, tokens: int, dtype: str = "float32",
                value_scale: float | None = None):
    """TIR: both caches of a layer in one call, in place, from the position on (clamped as in `kv_write`):
    keys as the rotary embedding leaves them, rows [tokens, kv_heads, head_dim / 2, 2], and values as rows
    [tokens, kv_heads * head_dim]. With `value_scale` the values are the int8 output of their linear layer,
    dequantized on the way in as TVM's dequantize computes it (float(v) * scale), so that neither the
    dequantize nor a second write is a step of its own. A TensorIR block, so glue_cores splits it over the
    cores: the decoder's rows never coincide (decode writes one token, the prompt fewer than the context
    from 0), so no two cores write one element."""
    half = head_dim // 2
    cache_shape = (1, kv_heads, context, head_dim)
    dequantize = value_scale is not None
    values_dtype = "int8" if dequantize else dtype
    scale = T.float32(value_scale if dequantize else 1.0)

    @T.prim_func(private=True, s_tir=True)
    def write(k_cache: T.Buffer(cache_shape, dtype), v_cache: T.Buffer(cache_shape, dtype),
              keys: T.Buffer((tokens, kv_heads, half, 2), dtype),
              values: T.Buffer((tokens, kv_heads * head_dim), values_dtype), position: T.Buffer((1,), "int32")):
        for t, h, d in T.grid(tokens, kv_heads, head_dim):
            with T.sblock("write"):
                vt, vh, vd = T.axis.remap("SSS", [t, h, d])
                k_cache[0, vh, T.max(T.min(position[0] + vt, context - 1), 0), vd] = keys[vt, vh, vd // 2, vd % 2]
                if dequantize:
                    v_cache[0, vh, T.max(T.min(position[0] + vt, context - 1), 0), vd] = \
                        T.Cast("float32", T.Cast("int32", values[vt, vh * head_dim + vd])) * scale
                else:
                    v_cache[0, vh, T.max(T.min(position[0] + vt, context - 1), 0), vd] = values[vt, vh * head_dim + vd]

    return write


def decode_mask(keys: int):
    """TIR: the attention mask of a decode step, [1, 1, 1, keys]: 0 for the keys up to the position, -inf
    after it. One per call, shared by every layer; a TensorIR block, so glue_cores splits it over the cores."""

    @T.prim_func(private=True, s_tir=True)
    def mask(position: T.Buffer((1,), "int32"), out: T.Buffer((1, 1, 1, keys), "float32")):
        for k in range(keys):
            with T.sblock("mask"):
                key = T.axis.spatial(keys, k)
                out[0, 0, 0, key] = T.Select(key <= position[0], T.float32(0), T.float32("-inf"))

    return mask


class _Decoder:
    def __init__(self, checkpoint: Checkpoint, quant: LlamaQuant | None, kv_cache: str):
        self.config, self.weights, self.quant, self.kv_cache = checkpoint.config, checkpoint.weights, quant, kv_cache
        self.cos, self.sin = rope_tables(self.config.head_dim, self.config.seq_len)
        self.constants: dict[str, relax.Constant] = {}  # shared by both functions

    def const(self, key: str, make) -> relax.Constant:
        if key not in self.constants:
            self.constants[key] = relax.const(make())
        return self.constants[key]

    # ---- one function ------------------------------------------------------------------------

    def build(self, bb: relax.BlockBuilder, mode: str, tokens: int) -> None:
        c = self.config
        cache_type = relax.TensorType((1, c.n_kv_heads, c.seq_len, c.head_dim), self.kv_cache)
        caches = [relax.Var(f"{kind}_cache_{i}", cache_type) for i in range(c.n_layers) for kind in "kv"]
        ids = relax.Var("tokens" if mode == "prompt" else "token", relax.TensorType((tokens,), "int32"))
        position = relax.Var("position", relax.TensorType((1,), "int32")) if mode == "decode" else None
        params = [ids] + ([position] if position is not None else []) + caches
        self.bb, self.tokens, self.quantized = bb, tokens, []
        with bb.function(mode, params):
            with bb.dataflow():
                where = position if position is not None else self.const("position0", lambda: np.zeros(1, "int32"))
                mask = None if position is None else self.emit(relax.call_tir(
                    bb.add_func(decode_mask(c.seq_len), "decode_mask"), [position],
                    relax.TensorType((1, 1, 1, c.seq_len), "float32")))
                cos, sin = self._rope_factors(position)
                embedding = self.const("embedding", lambda: self.weights.token_embedding)
                x = self.emit(relax.op.take(embedding, ids, axis=0, mode="clip"))
                updated = []
                for i in range(c.n_layers):
                    x, k_cache, v_cache = self._layer(i, x, caches[2 * i], caches[2 * i + 1], where, cos, sin, mask)
                    updated += [k_cache, v_cache]
                if tokens > 1:
                    x = self.emit(relax.op.strided_slice(x, axes=[0], begin=[tokens - 1], end=[tokens]))
                logits = self._head(self._norm(x, "rms_final", self.weights.rms_final))
                result = bb.emit_output(relax.Tuple([logits, *updated]))
            bb.emit_func_output(result)

    def emit(self, expr):
        return self.bb.emit(expr)

    def _rope_factors(self, position):
        """cos and sin broadcasting onto [tokens, heads, head_dim / 2, 1]."""
        half = self.config.head_dim // 2
        if position is None:
            return tuple(self.const(f"{name}_prompt", lambda t=table: t[:self.tokens].reshape(self.tokens, 1, half, 1))
                         for name, table in (("cos", self.cos), ("sin", self.sin)))
        factors = []
        for name, table in (("cos", self.cos), ("sin", self.sin)):
            row = self.emit(relax.op.take(self.const(name, lambda t=table: t), position, axis=0, mode="clip"))
            factors.append(self.emit(relax.op.reshape(row, (1, 1, half, 1))))
        return factors

    def _layer(self, i, x, k_cache, v_cache, where, cos, sin, mask):
        c, w = self.config, self.weights
        h = self._norm(x, f"rms_att_{i}", w.rms_att[i])
        q, _ = self._rope(self._linear(h, i, "wq"), cos, sin, c.n_heads)
        k, k_pairs = self._rope(self._linear(h, i, "wk"), cos, sin, c.n_kv_heads)
        v, v_rows, value_scale = self._values(h, i, mask is None)
        k_rows = k_pairs
        if self.kv_cache == "int8":
            k_scale, v_scale = self.quant.kv_scales[i]
            k_rows, v_rows = self._quantized(k_pairs, k_scale), self._quantized(v, v_scale)
        write = self.bb.add_func(cache_write(c.n_kv_heads, c.seq_len, c.head_dim, self.tokens, self.kv_cache,
                                             value_scale), f"kv_write_{'prompt' if mask is None else 'decode'}")
        cache_type = k_cache.ty
        written = self.emit(relax.call_tir_inplace(write, [k_cache, v_cache, k_rows, v_rows, where], [0, 1],
                                                   [cache_type, cache_type]))
        k_cache, v_cache = self.emit(relax.TupleGetItem(written, 0)), self.emit(relax.TupleGetItem(written, 1))
        if mask is None:
            att = self._attention(q, self._heads(k, c.n_kv_heads), self._heads(v, c.n_kv_heads), None)
        elif self.kv_cache == "int8":
            att = self._attention(q, self._dequantized(k_cache, k_scale), self._dequantized(v_cache, v_scale), mask)
        else:
            att = self._attention(q, k_cache, v_cache, mask)
        x = self.emit(relax.op.add(x, self._linear(att, i, "wo")))
        h = self._norm(x, f"rms_ffn_{i}", w.rms_ffn[i])
        gated = self.emit(relax.op.multiply(self.emit(relax.op.nn.silu(self._linear(h, i, "w1"))),
                                            self._linear(h, i, "w3")))
        x = self.emit(relax.op.add(x, self._linear(gated, i, "w2")))
        return x, k_cache, v_cache

    # ---- the pieces ----------------------------------------------------------------------------

    def _norm(self, x, key, weight):
        return self.emit(relax.op.nn.rms_norm(x, self.const(key, lambda: weight), axes=[-1], epsilon=RMS_EPS))

    def _rope(self, x, cos, sin, heads):
        """Rotate the interleaved pairs of each head of x [tokens, heads * head_dim]: (the result, the
        same as [tokens, heads, head_dim / 2, 2])."""
        n, half = self.tokens, self.config.head_dim // 2
        pairs = self.emit(relax.op.reshape(x, (n, heads, half, 2)))
        x0 = self.emit(relax.op.strided_slice(pairs, axes=[3], begin=[0], end=[1]))
        x1 = self.emit(relax.op.strided_slice(pairs, axes=[3], begin=[1], end=[2]))
        y0 = self.emit(relax.op.subtract(self.emit(relax.op.multiply(x0, cos)), self.emit(relax.op.multiply(x1, sin))))
        y1 = self.emit(relax.op.add(self.emit(relax.op.multiply(x0, sin)), self.emit(relax.op.multiply(x1, cos))))
        rotated = self.emit(relax.op.concat([y0, y1], axis=3))
        return self.emit(relax.op.reshape(rotated, (n, heads * self.config.head_dim))), rotated

    def _heads(self, x, heads):
        """[tokens, heads * head_dim] -> [1, heads, tokens, head_dim]."""
        x = self.emit(relax.op.reshape(x, (1, self.tokens, heads, self.config.head_dim)))
        return self.emit(relax.op.permute_dims(x, [0, 2, 1, 3]))

    def _repeat_kv(self, x):
        """Llama's repeat_kv: [1, kv_heads, keys, d] -> [1, heads, keys, d], query head h reading h // group."""
        c = self.config
        group = c.n_heads // c.n_kv_heads
        if group == 1:
            return x
        keys = int(x.ty.shape[2])
        x = self.emit(relax.op.expand_dims(x, 2))
        x = self.emit(relax.op.broadcast_to(x, (1, c.n_kv_heads, group, keys, c.head_dim)))
        return self.emit(relax.op.reshape(x, (1, c.n_heads, keys, c.head_dim)))

    def _values(self, h, i, prompt: bool):
        """(v as the attention reads it in the prompt, else None; the rows written to the cache; the scale the
        write dequantizes them with, or None). An int8 model with a float32 cache writes the int8 output of
        the v projection, dequantized in the write, so decode (which reads v from the cache) has no dequantize
        step."""
        if self.quant is None or self.kv_cache == "int8":
            v = self._linear(h, i, "wv")
            return v, v, None
        layer = self.quant.layers[i]["wv"]
        v_q = self._qdq_linear_int8(h, layer, f"wv_{i}")
        return (self._dequantized(v_q, layer.out_scale) if prompt else None), v_q, layer.out_scale

    def _attention(self, q, k, v, mask):
        c, n = self.config, self.tokens
        q = self._heads(q, c.n_heads)
        k, v = self._repeat_kv(k), self._repeat_kv(v)
        scores = self.emit(relax.op.matmul(q, self.emit(relax.op.permute_dims(k, [0, 1, 3, 2]))))
        scores = self.emit(relax.op.multiply(scores, relax.const(1.0 / np.sqrt(c.head_dim), "float32")))
        if mask is None:
            if n > 1:
                causal = np.triu(np.full((n, n), -1e9, "float32"), k=1)
                scores = self.emit(relax.op.add(scores, self.const("causal_mask", lambda: causal)))
        else:
            scores = self.emit(relax.op.add(scores, mask))
        att = self.emit(relax.op.matmul(self.emit(relax.op.nn.softmax(scores, axis=-1)), v))
        att = self.emit(relax.op.permute_dims(att, [0, 2, 1, 3]))
        return self.emit(relax.op.reshape(att, (n, c.dim)))

    def _linear(self, x, layer: int, name: str):
        if self.quant is None:
            weight = getattr(self.weights, name)[layer]
            return self.emit(relax.op.matmul(x, self.const(f"{name}_{layer}", lambda: np.ascontiguousarray(weight.T))))
        return self._qdq_linear(x, self.quant.layers[layer][name], f"{name}_{layer}")

    def _quantized(self, x, scale):
        """x quantized once per scale: q, k and v (w1 and w3) read the same norm with the same scale, so the
        norm's kernel can produce the int8 tensor itself."""
        for seen, seen_scale, quantized in self.quantized:
            if seen.same_as(x) and seen_scale == scale:
                return quantized
        quantized = self.emit(relax.op.quantize(x, relax.const(scale, "float32"), relax.const(0, "int8"),
                                                out_dtype="int8"))
        self.quantized.append((x, scale, quantized))
        return quantized

    def _dequantized(self, x_q, scale):
        return self.emit(relax.op.dequantize(x_q, relax.const(scale, "float32"), relax.const(0, "int8")))

    def _qdq_linear(self, x, layer: QuantLinear, key: str):
        return self._dequantized(self._qdq_linear_int8(x, layer, key), layer.out_scale)

    def _qdq_linear_int8(self, x, layer: QuantLinear, key: str):
        """The linear layer's int8 output (quantized with its output scale)."""
        x_q = self._quantized(x, layer.in_scale)
        w = self.emit(relax.op.dequantize(self.const(key, lambda: layer.weight),
                                          self.const(f"{key}_scale", lambda: layer.weight_scale),
                                          self.const(f"zeros_{layer.weight.shape[1]}",
                                                     lambda: np.zeros(layer.weight.shape[1], "int8")), axis=1))
        y = self.emit(relax.op.matmul(self._dequantized(x_q, layer.in_scale), w))
        return self._quantized(y, layer.out_scale)

    def _head(self, x):
        if self.quant is None:
            return self.emit(relax.op.matmul(x, self.const("wcls", lambda: np.ascontiguousarray(self.weights.wcls.T))))
        head = self.quant.head
        acc = self.emit(relax.op.matmul(self._quantized(x, head.in_scale), self.const("wcls", lambda: head.weight),
                                        out_dtype="int32"))
        # float(acc) * scale per column: one dequantize step (zero points 0) rather than a cast and a multiply
        return self.emit(relax.op.dequantize(acc, self.const("logit_scale", head.logit_scale),
                                             relax.const(0, "int32"), axis=1))


def build_decoder(checkpoint: Checkpoint, prompt_len: int, quant: LlamaQuant | None = None,
                  kv_cache: str = "float32") -> tvm.IRModule:
    """The module with `prompt` (for `prompt_len` tokens) and `decode` (see the module doc); `kv_cache`
    "float32" or "int8" (which needs `quant`)."""
    check_kv_cache(kv_cache, quant)
    c = checkpoint.config
    if not 1 <= prompt_len < c.seq_len:
        raise ValueError(f"prompt_len {prompt_len} must be in 1..{c.seq_len - 1} (the context is {c.seq_len})")
    decoder = _Decoder(checkpoint, quant, kv_cache)
    bb = relax.BlockBuilder()
    decoder.build(bb, "prompt", prompt_len)
    decoder.build(bb, "decode", 1)
    return bb.get()
