"""Small Relax models built in code: the demo's transformer block and the test graphs.

Weights are seeded NumPy constants, so every build of the same arguments is the same module.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def _const(rng, *shape, scale=None):
    scale = 1.0 / np.sqrt(shape[0]) if scale is None else scale
    return relax.const((rng.standard_normal(shape) * scale).astype("float32"))


def _quantized_linear(bb, x_q, x_scale, x_zp, weight, bias, y_scale, y_zp):
    """QDQ int8 linear layer as TVM users write it: dequantize -> matmul (+ bias) -> quantize,
    per-output-channel weight scales."""
    w_scale = np.abs(weight).max(axis=0) / 127.0
    w_q = np.clip(np.rint(weight / w_scale), -127, 127).astype("int8")
    x = bb.emit(relax.op.dequantize(x_q, relax.const(x_scale, "float32"), relax.const(x_zp, "int8")))
    w = bb.emit(relax.op.dequantize(relax.const(w_q), relax.const(w_scale.astype("float32")),
                                    relax.const(np.zeros(w_q.shape[1], "int8")), axis=1))
    y = bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, w)), relax.const(bias)))
    return bb.emit(relax.op.quantize(y, relax.const(y_scale, "float32"), relax.const(y_zp, "int8"),
                                     out_dtype="int8"))


def transformer_block(seq: int = 16, dim: int = 32, heads: int = 4, ffn: int = 64,
                      causal: bool = True, seed: int = 0) -> tvm.IRModule:
    """A pre-norm transformer block on x[seq, dim]: layer norm, multi-head self-attention through
    R.nn.attention, output projection, residual, layer norm, ReLU feed-forward, residual.
    The linear layers, attention and residual adds are what deeploy offloads; the layer norms stay in TVM."""
    rng = np.random.default_rng(seed)
    head_dim = dim // heads
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((seq, dim), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            def norm(v):
                return bb.emit(relax.op.nn.layer_norm(v, relax.const(np.ones(dim, "float32")),
                                                      relax.const(np.zeros(dim, "float32")), axes=[-1]))

            def linear(v, n_in, n_out):
                y = bb.emit(relax.op.matmul(v, _const(rng, n_in, n_out)))
                return bb.emit(relax.op.add(y, _const(rng, n_out, scale=0.1)))

            h = norm(x)
            q, k, v = (bb.emit(relax.op.reshape(linear(h, dim, dim), (1, seq, heads, head_dim)))
                       for _ in range(3))
            att = bb.emit(relax.op.nn.attention(q, k, v, causal_mask="TopLeft" if causal else None))
            att = bb.emit(relax.op.reshape(att, (seq, dim)))
            x1 = bb.emit(relax.op.add(x, linear(att, dim, dim)))
            hidden = bb.emit(relax.op.nn.relu(linear(norm(x1), dim, ffn)))
            out = bb.emit_output(relax.op.add(x1, linear(hidden, ffn, dim)))
        bb.emit_func_output(out)
    return bb.get()


def mlp_attention(seq: int = 16, dim: int = 32, heads: int = 4, hidden: int = 64,
                  seed: int = 0) -> tvm.IRModule:
    """A 2-layer MLP (GEMM, ReLU, GEMM) whose output feeds scaled-dot-product self-attention."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((seq, dim), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, _const(rng, dim, hidden))),
                                     _const(rng, hidden, scale=0.1)))
            h = bb.emit(relax.op.nn.relu(h))
            h = bb.emit(relax.op.add(bb.emit(relax.op.matmul(h, _const(rng, hidden, dim))),
                                     _const(rng, dim, scale=0.1)))
            qkv = bb.emit(relax.op.reshape(h, (1, seq, heads, dim // heads)))
            att = bb.emit(relax.op.nn.attention(qkv, qkv, qkv, scale=0.5))
            out = bb.emit_output(relax.op.reshape(att, (seq, dim)))
        bb.emit_func_output(out)
    return bb.get()


def int8_mlp(tokens: int = 16, dim: int = 64, hidden: int = 128, seed: int = 0) -> tvm.IRModule:
    """Two QDQ int8 linear layers (int8 in, int8 out), the form TVM's and ONNX's quantizers produce."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((tokens, dim), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = _quantized_linear(bb, x, 0.05, 3, rng.standard_normal((dim, hidden)) / np.sqrt(dim),
                                  (rng.standard_normal(hidden) * 0.1).astype("float32"), 0.04, -5)
            out = _quantized_linear(bb, h, 0.04, -5, rng.standard_normal((hidden, dim)) / np.sqrt(hidden),
                                    (rng.standard_normal(dim) * 0.1).astype("float32"), 0.03, 0)
            out = bb.emit_output(out)
        bb.emit_func_output(out)
    return bb.get()



def _float_linear_or_qdq(bb, rng, quantized):
    """A linear layer builder: fp32 matmul + bias, or (quantized) an int8 QDQ layer between float
    activations: quantize (per tensor) -> dequantize -> matmul with the per-output-channel int8 weight ->
    add bias -> quantize -> dequantize."""
    def linear(v, n_in, n_out, in_scale=0.03, out_scale=0.05):
        weight = rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)
        bias = (rng.standard_normal(n_out) * 0.1).astype("float32")
        if not quantized:
            y = bb.emit(relax.op.matmul(v, relax.const(weight.astype("float32"))))
            return bb.emit(relax.op.add(y, relax.const(bias)))
        v_q = bb.emit(relax.op.quantize(v, relax.const(in_scale, "float32"), relax.const(0, "int8"),
                                        out_dtype="int8"))
        y_q = _quantized_linear(bb, v_q, in_scale, 0, weight, bias, out_scale, 0)
        return bb.emit(relax.op.dequantize(y_q, relax.const(out_scale, "float32"), relax.const(0, "int8")))

    return linear


def _llama(seq, dim, heads, ffn, quantized, seed):
    rng = np.random.default_rng(seed)
    head_dim = dim // heads
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((seq, dim), "float32"))
    mask = np.triu(np.full((seq, seq), -1e9, "float32"), k=1)
    linear = _float_linear_or_qdq(bb, rng, quantized)
    with bb.function("main", [x]):
        with bb.dataflow():
            def norm(v):
                weight = (1.0 + 0.1 * rng.standard_normal(dim)).astype("float32")
                return bb.emit(relax.op.nn.rms_norm(v, relax.const(weight), axes=[-1], epsilon=1e-5))

            def heads_first(v):  # [seq, dim] -> [heads, seq, head_dim]
                v = bb.emit(relax.op.reshape(v, (seq, heads, head_dim)))
                return bb.emit(relax.op.permute_dims(v, [1, 0, 2]))

            h = norm(x)
            q, k, v = (heads_first(linear(h, dim, dim)) for _ in range(3))
            scores = bb.emit(relax.op.matmul(q, bb.emit(relax.op.permute_dims(k, [0, 2, 1]))))
            scores = bb.emit(relax.op.multiply(scores, relax.const(1.0 / np.sqrt(head_dim), "float32")))
            scores = bb.emit(relax.op.add(scores, relax.const(mask)))
            att = bb.emit(relax.op.matmul(bb.emit(relax.op.nn.softmax(scores, axis=-1)), v))
            att = bb.emit(relax.op.reshape(bb.emit(relax.op.permute_dims(att, [1, 0, 2])), (seq, dim)))
            x1 = relax.op.add(x, linear(att, dim, dim))
            if ffn is None:
                out = bb.emit_output(x1)
            else:
                x1 = bb.emit(x1)
                h = norm(x1)
                gated = bb.emit(relax.op.multiply(bb.emit(relax.op.nn.silu(linear(h, dim, ffn))),
                                                  linear(h, dim, ffn)))
                out = bb.emit_output(relax.op.add(x1, linear(gated, ffn, dim, in_scale=0.02)))
        bb.emit_func_output(out)
    return bb.get()


def llama_block(seq: int = 16, dim: int = 32, heads: int = 4, ffn: int = 64, quantized: bool = False,
                seed: int = 0) -> tvm.IRModule:
    """A Llama-style block on x[seq, dim] (float32 in and out): RMSNorm, causal multi-head self-attention
    written as ONNX imports it (permute_dims, matmul(Q, Kᵀ), scale, additive mask, softmax, matmul V),
    output projection, residual add, RMSNorm, gated feed-forward down(silu(gate(h)) * up(h)), residual add.

    `quantized`: every linear layer is an int8 QDQ layer (the activation quantized per tensor, the weight
    per output channel, dequantize -> matmul -> add bias -> quantize, then dequantized for the float ops);
    norms, softmax, SiLU and the residual adds stay float32."""
    return _llama(seq, dim, heads, ffn, quantized, seed)


def attention_block(seq: int = 16, dim: int = 32, heads: int = 4, quantized: bool = False,
                    seed: int = 0) -> tvm.IRModule:
    """The attention half of `llama_block`: RMSNorm, causal multi-head self-attention, output
    projection, residual add (fp32, or int8 QDQ linear layers with `quantized`)."""
    return _llama(seq, dim, heads, None, quantized, seed)


def mlp(tokens: int = 16, dim: int = 32, hidden: int = 64, quantized: bool = False,
        seed: int = 0) -> tvm.IRModule:
    """x[tokens, dim] -> linear -> ReLU -> linear (fp32, or int8 QDQ linear layers with `quantized`;
    float32 in and out either way)."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((tokens, dim), "float32"))
    linear = _float_linear_or_qdq(bb, rng, quantized)
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.nn.relu(linear(x, dim, hidden)))
            out = bb.emit_output(linear(h, hidden, dim, in_scale=0.02))
        bb.emit_func_output(out)
    return bb.get()


def attention_layer(heads: int = 16, kv_heads: int | None = None, head_dim: int = 4, tokens: int = 64,
                    cache: int = 0, cache_form: str = "concat", gqa: str = "broadcast", quantized: bool = False,
                    mask: str = "const", scales: tuple[float, float, float, float] = (0.08, 0.08, 0.03, 0.02),
                    zero_points: tuple[int, int, int, int] = (2, -3, 1, -4)) -> tvm.IRModule:
    """The attention of a Llama decoder layer as exported graphs write it, on the already projected
    (and rotated) q [1, tokens, heads * head_dim], k and v [1, tokens, kv_heads * head_dim]:
    reshape to heads, permute_dims to [1, heads, tokens, head_dim], K/V heads repeated for grouped-
    query attention, matmul(Q, Kᵀ) * 1/sqrt(head_dim) [+ mask], softmax, matmul V, back to
    [1, tokens, heads * head_dim].

    cache 0: prompt; `mask` "const" is the additive causal mask (-1e9 above the diagonal), "none" none.
    cache > 0: decode against a KV cache, inputs k_cache and v_cache [1, kv_heads, cache, head_dim];
      cache_form "concat": keys are concat(cache, new) (cache + tokens of them; the new tokens see every
      cached key: a bottom-right causal mask when tokens > 1), returned as the new cache;
      cache_form "position": a fixed-size cache and an int32 position input [1]; the new token (tokens
      must be 1) is written at that position (TVM's where) and an additive mask computed from the
      position (keys after it get -inf) goes into the scores; returns the updated cache.
    gqa (kv_heads < heads): "broadcast" (expand_dims, broadcast_to, reshape: query head h reads K/V head
      h // (heads / kv_heads), as Llama's repeat_kv), "repeat" (R.repeat, the same mapping) or "tile"
      (R.tile: head h reads h % kv_heads).
    quantized: q, k, v (and the caches) are int8 inputs, dequantized with per-tensor `scales` and
      `zero_points` (q, k, v, output); the output is quantized to int8.
    """
    kv_heads = kv_heads or heads
    group = heads // kv_heads
    dtype = "int8" if quantized else "float32"
    if cache_form == "position" and (tokens != 1 or quantized):
        raise ValueError("the fixed-size cache form is fp32 decode of one token")
    bb = relax.BlockBuilder()
    params = [relax.Var("q", relax.TensorType((1, tokens, heads * head_dim), dtype)),
              relax.Var("k", relax.TensorType((1, tokens, kv_heads * head_dim), dtype)),
              relax.Var("v", relax.TensorType((1, tokens, kv_heads * head_dim), dtype))]
    if cache:
        params += [relax.Var(f"{n}_cache", relax.TensorType((1, kv_heads, cache, head_dim), dtype)) for n in "kv"]
        if cache_form == "position":
            params.append(relax.Var("position", relax.TensorType((1,), "int32")))

    def const(value, dtype_):
        return relax.const(value, dtype_)

    with bb.function("main", params):
        with bb.dataflow():
            def heads_first(x, n):  # [1, tokens, n * head_dim] -> [1, n, tokens, head_dim]
                x = bb.emit(relax.op.reshape(x, (1, tokens, n, head_dim)))
                return bb.emit(relax.op.permute_dims(x, [0, 2, 1, 3]))

            def dequantize(x, i):
                if not quantized:
                    return x
                return bb.emit(relax.op.dequantize(x, const(scales[i], "float32"), const(zero_points[i], "int8")))

            q = heads_first(params[0], heads)
            k, v = heads_first(params[1], kv_heads), heads_first(params[2], kv_heads)
            keys, extra_outputs, add_mask = tokens, [], None
            if cache and cache_form == "concat":
                k = bb.emit(relax.op.concat([params[3], k], axis=2))
                v = bb.emit(relax.op.concat([params[4], v], axis=2))
                keys, extra_outputs = cache + tokens, [k, v]
            elif cache:
                index = bb.emit(relax.op.reshape(relax.op.arange(0, cache, 1, "int32"), (1, 1, cache, 1)))
                here = bb.emit(relax.op.equal(index, params[5]))
                k = bb.emit(relax.op.where(here, k, params[3]))
                v = bb.emit(relax.op.where(here, v, params[4]))
                seen = bb.emit(relax.op.less_equal(relax.op.reshape(index, (1, 1, 1, cache)), params[5]))
                add_mask = bb.emit(relax.op.where(seen, const(0.0, "float32"), const(-np.inf, "float32")))
                keys, extra_outputs = cache, [k, v]
            q, k, v = dequantize(q, 0), dequantize(k, 1), dequantize(v, 2)
            if group > 1:
                if gqa == "repeat":
                    k, v = (bb.emit(relax.op.repeat(x, group, axis=1)) for x in (k, v))
                elif gqa == "tile":
                    k, v = (bb.emit(relax.op.tile(x, [1, group, 1, 1])) for x in (k, v))
                else:
                    def repeat_kv(x):
                        x = bb.emit(relax.op.expand_dims(x, 2))
                        x = bb.emit(relax.op.broadcast_to(x, (1, kv_heads, group, keys, head_dim)))
                        return bb.emit(relax.op.reshape(x, (1, heads, keys, head_dim)))
                    k, v = repeat_kv(k), repeat_kv(v)
            scores = bb.emit(relax.op.matmul(q, bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2]))))
            scores = bb.emit(relax.op.multiply(scores, const(1.0 / np.sqrt(head_dim), "float32")))
            if add_mask is not None:
                scores = bb.emit(relax.op.add(scores, add_mask))
            elif mask == "const" and tokens > 1:
                i, j = np.arange(tokens)[:, None], np.arange(keys)[None, :]
                causal = np.where(j <= i + keys - tokens, 0.0, -1e9).astype("float32")
                scores = bb.emit(relax.op.add(scores, const(causal, "float32")))
            att = bb.emit(relax.op.matmul(bb.emit(relax.op.nn.softmax(scores, axis=-1)), v))
            att = bb.emit(relax.op.permute_dims(att, [0, 2, 1, 3]))
            out = bb.emit(relax.op.reshape(att, (1, tokens, heads * head_dim)))
            if quantized:
                out = bb.emit(relax.op.quantize(out, const(scales[3], "float32"), const(zero_points[3], "int8"),
                                                out_dtype="int8"))
            result = bb.emit_output(relax.Tuple([out, *extra_outputs]) if extra_outputs else out)
        bb.emit_func_output(result)
    return bb.get()


def llama_decoder(checkpoint, prompt_len: int, quant=None, kv_cache: str = "float32") -> tvm.IRModule:
    """A Llama decoder from a llama2.c checkpoint (a path or a `checkpoint.Checkpoint`): a module with
    `prompt` (prompt_len tokens) and `decode` (one token against the KV cache) functions; `quant`
    (`llama_reference.calibrate`) makes its linear layers int8 QDQ; `kv_cache="int8"` (with `quant`) keeps
    int8 keys and values, a quarter of the float32 cache. See `tvm_deeploy.lm.llama`."""
    from .lm.checkpoint import Checkpoint, load_checkpoint
    from .lm.llama import build_decoder

    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint)
    return build_decoder(checkpoint, prompt_len, quant, kv_cache)
