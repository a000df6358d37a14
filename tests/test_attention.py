"""fp32 attention offloaded as one fused kernel, in the forms TVM users and importers write it."""

import numpy as np
import pytest
from conftest import assert_close_f32, build_and_run, offloaded
from test_patterns import graph, random_inputs
from tvm import relax

import tvm_deeploy


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


# ---------------------------------------------------------------------------------------------
# an int8 KV cache read by the fp32 kernel: fp32 Q, K and/or V dequantize(int8, scalar scale, zero point)

def _dequantized(bb, x, scale, zp, axis=-1):
    return bb.emit(relax.op.dequantize(x, relax.const(scale, "float32"), relax.const(zp, "int8"), axis=axis))


def _int8_kv_decode(kv_heads=2, group=2, int8="kv", scales=(0.05, 0.03), zps=(3, -2)):
    """Llama's decode attention over a fixed-size cache: q [1, heads, 1, 4], caches [1, kv_heads, ctx, 4]
    (int8 where `int8` says, dequantized per tensor), K/V heads repeated by expand_dims -> broadcast_to
    -> reshape, a run-time position mask [1, 1, 1, ctx]."""
    def body(bb, q, k, v, mask):
        ctx, d = k.ty.shape.values[2], 4
        kv = []
        for name, x, scale, zp in (("k", k, scales[0], zps[0]), ("v", v, scales[1], zps[1])):
            x = _dequantized(bb, x, scale, zp) if name in int8 else x
            x = bb.emit(relax.op.expand_dims(x, 2))
            x = bb.emit(relax.op.broadcast_to(x, (1, kv_heads, group, ctx, d)))
            kv.append(bb.emit(relax.op.reshape(x, (1, kv_heads * group, ctx, d))))
        scores = bb.emit(relax.op.matmul(q, bb.emit(relax.op.permute_dims(kv[0], [0, 1, 3, 2]))))
        scores = bb.emit(relax.op.add(bb.emit(relax.op.multiply(scores, relax.const(0.5, "float32"))), mask))
        return relax.op.matmul(bb.emit(relax.op.nn.softmax(scores, axis=-1)), kv[1])
    return body


def _decode_inputs(kv_heads, group, ctx, int8):
    return [((1, kv_heads * group, 1, 4), "float32"), ((1, kv_heads, ctx, 4), "int8" if "k" in int8 else "float32"),
            ((1, kv_heads, ctx, 4), "int8" if "v" in int8 else "float32"), ((1, 1, 1, ctx), "float32")]


def _position_mask(ctx, position):
    return np.where(np.arange(ctx) <= position, 0.0, -np.inf).astype("float32").reshape(1, 1, 1, ctx)


def _attention_summaries(mod):
    report = tvm_deeploy.compile_report(mod, tvm_deeploy.target())
    return [f["summary"] for f in report.values() if f["op"] == "attention"]


@pytest.mark.parametrize("int8", ["k", "v", "kv"])
def test_int8_kv_cache_is_read_by_the_fp32_kernel(int8, tmp_path, rng):
    """The dequantizes of the cache are folded into the kernel: the offloaded function takes the int8
    cache, and its result equals bit for bit the same kernel over the dequantized cache (and TVM's llvm
    build within the fp32 tolerance)."""
    from tvm_deeploy.offload import reference

    kv_heads, group, ctx, scales, zps = 2, 2, 40, (0.05, 0.03), (3, -2)
    inputs = _decode_inputs(kv_heads, group, ctx, int8)
    mod = graph(inputs, _int8_kv_decode(kv_heads, group, int8, scales, zps))
    assert offloaded(mod) == [f"attention_chain_int8_{int8}"]
    assert _attention_summaries(mod) == [f"attention float32 batch=1 heads=4/2 q=1 kv={ctx} d=4/4 causal=none "
                                         f"int8 {int8}"]
    arrays = random_inputs(rng, inputs[:3]) + [_position_mask(ctx, 17)]
    ours = build_and_run(mod, "deeploy", arrays, tmp_path)
    assert_close_f32(ours, build_and_run(mod, "llvm", arrays, tmp_path))
    dequantized = [reference.dequantize_s8(x, reference.Quant(float(np.float32(s)), zp)) if x.dtype == np.int8 else x
                   for x, s, zp in zip(arrays[1:3], scales, zps)]
    float_mod = graph(_decode_inputs(kv_heads, group, ctx, ""), _int8_kv_decode(kv_heads, group, ""))
    float_ours = build_and_run(float_mod, "deeploy", [arrays[0], *dequantized, arrays[3]], tmp_path, name="f32")
    np.testing.assert_array_equal(ours, float_ours)


def test_int8_kv_attention_op(tmp_path, rng):
    """R.nn.attention over dequantized K and V (TVM's head h -> K/V head h % kv_heads) and a causal mask."""
    shapes = [(1, 5, 4, 8), (1, 9, 2, 8), (1, 9, 2, 8)]

    def body(bb, q, k, v):
        return relax.op.nn.attention(q, _dequantized(bb, k, 0.04, 1), _dequantized(bb, v, 0.02, 0), scale=0.3,
                                     causal_mask="BottomRight")

    inputs = [(shapes[0], "float32"), (shapes[1], "int8"), (shapes[2], "int8")]
    mod = graph(inputs, body)
    assert offloaded(mod) == ["attention_int8_kv"]
    assert _attention_summaries(mod)[0].endswith("int8 kv")
    arrays = random_inputs(rng, inputs)
    assert_close_f32(build_and_run(mod, "deeploy", arrays, tmp_path), build_and_run(mod, "llvm", arrays, tmp_path))


def _describe_refusal(inputs, body) -> str:
    """describe_attention on the whole dataflow block of `graph(inputs, body)`: the reason it refuses."""
    from tvm_deeploy.offload.describe import CallTree, Unsupported, describe_attention

    func = graph(inputs, body)["main"]
    bindings = {b.var: b.value for block in func.body.blocks for b in block.bindings}
    root = func.body.blocks[-1].bindings[-1].value
    with pytest.raises(Unsupported) as err:
        describe_attention(CallTree(bindings, func.params), root)
    return str(err.value)


def test_int8_kv_refusals_name_the_reason(tmp_path, rng):
    """What the kernel does not read itself stays in TVM, with the reason named: per-channel scales, a
    source other than int8, a dequantized Q; the attention still offloads over TVM's dequantize."""
    kv_heads, group, ctx = 2, 2, 12
    inputs = _decode_inputs(kv_heads, group, ctx, "kv")

    def per_channel(bb, q, k, v, mask):
        k = bb.emit(relax.op.dequantize(k, relax.const(np.array([0.05, 0.04], "float32")),
                                        relax.const(np.zeros(2, "int8")), axis=1))
        return _int8_kv_decode(kv_heads, group, "v")(bb, q, k, v, mask)

    assert "dequantize scale is not per tensor" in _describe_refusal(inputs, per_channel)
    mod = graph(inputs, per_channel)
    assert all(not s.endswith(("int8 k", "int8 kv")) for s in _attention_summaries(mod))
    arrays = random_inputs(rng, inputs[:3]) + [_position_mask(ctx, 5)]
    assert_close_f32(build_and_run(mod, "deeploy", arrays, tmp_path), build_and_run(mod, "llvm", arrays, tmp_path))

    uint8_inputs = [inputs[0], (inputs[1][0], "uint8"), inputs[2], inputs[3]]
    assert "attention k is dequantized from uint8" in _describe_refusal(uint8_inputs, _int8_kv_decode(kv_heads, group))

    def quantized_q(bb, q, k, v, mask):
        return _int8_kv_decode(kv_heads, group)(bb, _dequantized(bb, q, 0.1, 0), k, v, mask)

    def v_also_returned(bb, q, k, v, mask):  # absorbing V's dequantize would hide a value TVM still needs
        v = _dequantized(bb, v, 0.03, 0)
        return relax.Tuple([bb.emit(_int8_kv_decode(kv_heads, group, "k")(bb, q, k, v, mask)), v])

    mod = graph(inputs, v_also_returned)
    assert offloaded(mod) == ["attention_chain_int8_k"] and _attention_summaries(mod)[0].endswith("int8 k")
    ours, llvm = (build_and_run(mod, target, arrays, tmp_path, "shared") for target in ("deeploy", "llvm"))
    assert_close_f32(ours[0], llvm[0])
    np.testing.assert_array_equal(ours[1], llvm[1])

    q_inputs = [((1, kv_heads * group, 1, 4), "int8")] + inputs[1:]
    assert "int8 attention needs dequantized Q, K, V and a quantized output" in _describe_refusal(q_inputs,
                                                                                                 quantized_q)
