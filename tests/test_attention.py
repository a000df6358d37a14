"""fp32 attention offloaded as one fused kernel, in the forms TVM users and importers write it."""

import numpy as np
import pytest
from conftest import assert_close_f32, build_and_run, offloaded
from test_patterns import graph, random_inputs
from tvm import relax


def _attention(scale=None, causal=None, bias=False):
    def body(bb, q, k, v, *rest):
        return relax.op.nn.attention(q, k, v, rest[0] if bias else None, scale=scale, causal_mask=causal)
    return body


# (batch, q_len, heads, dim), (batch, kv_len, kv_heads, dim), (batch, kv_len, kv_heads, v_dim)
ATTENTION_OP_CASES = {
    "plain": ((2, 6, 3, 4), (2, 6, 3, 4), (2, 6, 3, 4), _attention(), None),
    "scale": ((1, 5, 2, 8), (1, 7, 2, 8), (1, 7, 2, 6), _attention(scale=0.3), None),
    "causal top-left": ((1, 8, 4, 4), (1, 8, 4, 4), (1, 8, 4, 4), _attention(causal="TopLeft"), None),
    "causal top-left q<kv": ((1, 3, 2, 4), (1, 9, 2, 4), (1, 9, 2, 4), _attention(causal="TopLeft"), None),
    "causal bottom-right q<kv": ((1, 3, 2, 4), (1, 9, 2, 4), (1, 9, 2, 4), _attention(causal="BottomRight"), None),
    "bias": ((2, 4, 2, 4), (2, 5, 2, 4), (2, 5, 2, 4), _attention(bias=True), (2, 2, 4, 5)),
}


@pytest.mark.parametrize("name", sorted(ATTENTION_OP_CASES))
def test_attention_op(name, tmp_path, rng):
    q, k, v, body, bias = ATTENTION_OP_CASES[name]
    inputs = [(q, "float32"), (k, "float32"), (v, "float32")] + ([(bias, "float32")] if bias else [])
    mod = graph(inputs, body)
    assert offloaded(mod) == ["attention"]
    arrays = random_inputs(rng, inputs)
    assert_close_f32(build_and_run(mod, "deeploy", arrays, tmp_path), build_and_run(mod, "llvm", arrays, tmp_path))


def _chain(scale_op="multiply", mask=False, permute_q=False, permute_out=False):
    """softmax(Q K^T * s [+ mask]) V written op by op, K transposed by permute_dims."""
    def body(bb, q, k, v, *rest):
        if permute_q:  # Q arrives as (batch, seq, head, dim)
            q = bb.emit(relax.op.permute_dims(q, [0, 2, 1, 3]))
        kt = bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2]))
        scores = bb.emit(relax.op.matmul(q, kt))
        if scale_op == "multiply":
            scores = bb.emit(relax.op.multiply(scores, relax.const(0.5, "float32")))
        elif scale_op == "divide":
            scores = bb.emit(relax.op.divide(scores, relax.const(2.0, "float32")))
        if mask:
            scores = bb.emit(relax.op.add(scores, rest[0]))
        out = bb.emit(relax.op.matmul(bb.emit(relax.op.nn.softmax(scores, axis=-1)), v))
        return relax.op.permute_dims(out, [0, 2, 1, 3]) if permute_out else out
    return body


CHAIN_CASES = {
    "multiply": dict(),
    "divide": dict(scale_op="divide"),
    "unscaled": dict(scale_op=None),
    "mask": dict(mask=True),
    "permuted in and out": dict(permute_q=True, permute_out=True),
}


@pytest.mark.parametrize("name", sorted(CHAIN_CASES))
def test_attention_chain(name, tmp_path, rng):
    options = CHAIN_CASES[name]
    batch, heads, seq, dim = 2, 3, 6, 4
    q_shape = (batch, seq, heads, dim) if options.get("permute_q") else (batch, heads, seq, dim)
    inputs = [(q_shape, "float32"), ((batch, heads, seq, dim), "float32"), ((batch, heads, seq, dim), "float32")]
    if options.get("mask"):
        inputs.append(((1, 1, seq, seq), "float32"))
    mod = graph(inputs, _chain(**options))
    assert offloaded(mod) == ["attention_chain"]
    arrays = random_inputs(rng, inputs)
    assert_close_f32(build_and_run(mod, "deeploy", arrays, tmp_path), build_and_run(mod, "llvm", arrays, tmp_path))


def test_chain_with_shared_scores_is_not_fused(tmp_path, rng):
    """If the scores are also returned, the chain cannot be fused; its parts still offload."""
    def body(bb, q, k, v):
        scores = bb.emit(relax.op.matmul(q, bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2]))))
        out = bb.emit(relax.op.matmul(bb.emit(relax.op.nn.softmax(scores)), v))
        return relax.Tuple([out, scores])
    shape = (1, 2, 5, 4)
    inputs = [(shape, "float32")] * 3
    mod = graph(inputs, body)
    assert offloaded(mod) == ["matmul", "matmul", "softmax"]
    arrays = random_inputs(rng, inputs)
    for ours, ref in zip(build_and_run(mod, "deeploy", arrays, tmp_path), build_and_run(mod, "llvm", arrays, tmp_path)):
        assert_close_f32(ours, ref)


def test_fewer_kv_heads_keep_tvms_head_mapping(tmp_path, rng):
    """TVM defines R.nn.attention with fewer K/V heads as query head h -> K/V head h % kv_heads (not
    the grouped h // (heads / kv_heads)): offloaded with exactly that mapping."""
    inputs = [((1, 4, 8, 4), "float32"), ((1, 4, 4, 4), "float32"), ((1, 4, 4, 4), "float32")]
    mod = graph(inputs, _attention())
    assert offloaded(mod) == ["attention"]
    arrays = random_inputs(rng, inputs)
    assert_close_f32(build_and_run(mod, "deeploy", arrays, tmp_path), build_and_run(mod, "llvm", arrays, tmp_path))


@pytest.mark.parametrize("kv_heads, causal", [(4, "TopLeft"), (2, None), (1, "BottomRight")])
def test_int8_attention_op(kv_heads, causal, tmp_path, rng):
    """quantize(R.nn.attention(dequantize(q), dequantize(k), dequantize(v))): the int8 kernel, bit-exact
    against reference.attention_s8 (with TVM's head h -> K/V head h % kv_heads), within 2 LSB of TVM."""
    from tvm_deeploy.offload import reference

    b, s, kv_s, h, d = 1, 6, 9, 4, 8
    shapes = [(b, s, h, d), (b, kv_s, kv_heads, d), (b, kv_s, kv_heads, d)]
    scales, zps = (0.06, 0.05, 0.03, 0.015), (1, -2, 3, -1)

    def body(bb, q, k, v):
        dq = [bb.emit(relax.op.dequantize(x, relax.const(sc, "float32"), relax.const(zp, "int8")))
              for x, sc, zp in zip((q, k, v), scales, zps)]
        att = bb.emit(relax.op.nn.attention(*dq, scale=0.3, causal_mask=causal))
        return relax.op.quantize(att, relax.const(scales[3], "float32"), relax.const(zps[3], "int8"), out_dtype="int8")

    mod = graph([(shape, "int8") for shape in shapes], body)
    assert offloaded(mod) == ["attention_s8"]
    arrays = [rng.integers(-128, 128, shape).astype("int8") for shape in shapes]
    ours = build_and_run(mod, "deeploy", arrays, tmp_path)
    q, k, v = (x.transpose(0, 2, 1, 3) for x in arrays)
    quant = reference.attention_quant(*scales, *zps, float(np.float32(0.3)), kv_s)
    mode = {None: "none", "TopLeft": "top_left", "BottomRight": "bottom_right"}[causal]
    expected = reference.attention_s8(q, k, v, quant, mode, kv_heads, kv_div=1).transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(ours, expected)
    assert np.abs(ours.astype(np.int32) - build_and_run(mod, "llvm", arrays, tmp_path)).max() <= 2
