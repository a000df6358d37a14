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
    The linear layers and attention are what deeploy offloads; the norms and adds stay in TVM."""
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
