"""ONNX models through `load_onnx` and `tvm.relax.build(target="deeploy")`, against onnxruntime and TVM llvm.

fp32 graphs must match both within `assert_close_f32`. int8 QDQ graphs must be bit-exact against the
package's integer reference (`tvm_deeploy.offload.reference`) and within 1 LSB of onnxruntime and of TVM llvm,
which compute in float; the fraction of elements that differ is printed and kept under 1 %.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_close_f32, build_and_run, offloaded
from onnx import TensorProto, helper, numpy_helper

from tvm_deeploy.frontend.onnx_import import ModelError, ModelWarning, load_onnx
from tvm_deeploy.offload import reference

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17, which every onnxruntime release since 1.11 reads

F32, I8 = TensorProto.FLOAT, TensorProto.INT8


def make_model(nodes, inputs, outputs, initializers=None, domains=()):
    """An opset-17 model; inputs/outputs map names to (element type, shape), initializers to arrays."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(name, *spec) for name, spec in inputs.items()],
        [helper.make_tensor_value_info(name, *spec) for name, spec in outputs.items()],
        [numpy_helper.from_array(np.asarray(value), name) for name, value in (initializers or {}).items()])
    opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(domain, 1) for domain in domains]
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION)


def save(model: onnx.ModelProto, tmp_path, name="model.onnx"):
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def run_onnxruntime(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def run_everywhere(model, feeds, tmp_path):
    """(module, deeploy output, llvm output, onnxruntime output) for a model loaded from a file."""
    mod = load_onnx(save(model, tmp_path))
    inputs = list(feeds.values())
    return (mod, build_and_run(mod, "deeploy", inputs, tmp_path), build_and_run(mod, "llvm", inputs, tmp_path),
            run_onnxruntime(model, feeds))


def assert_f32_matches(model, feeds, tmp_path):
    mod, deeploy, llvm, onnxruntime = run_everywhere(model, feeds, tmp_path)
    assert_close_f32(deeploy, onnxruntime)
    assert_close_f32(deeploy, llvm)
    return mod


def normal(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------- fp32 GEMM


@pytest.mark.parametrize("x_shape", [(8, 16), (2, 8, 16)], ids=["2d", "batched_3d"])
def test_matmul_constant_weight(x_shape, rng, tmp_path):
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       {"x": (F32, x_shape)}, {"y": (F32, x_shape[:-1] + (12,))},
                       {"w": normal(rng, (16, 12))})
    mod = assert_f32_matches(model, {"x": normal(rng, x_shape)}, tmp_path)
    assert {"matmul", "gemm"} & set(offloaded(mod))


def test_gemm_trans_b_bias(rng, tmp_path):
    model = make_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
                       {"x": (F32, (8, 32))}, {"y": (F32, (8, 24))},
                       {"w": normal(rng, (24, 32)), "b": normal(rng, (24,))})
    mod = assert_f32_matches(model, {"x": normal(rng, (8, 32))}, tmp_path)
    assert offloaded(mod) == ["gemm"]


# ---------------------------------------------------------------- int8 QDQ GEMM

QDQ_VARIANTS = {
    # name: (weight scales, activation zero point, float bias)
    "per_channel": ("per_channel", 0, False),
    "per_tensor": ("per_tensor", 0, False),
    "activation_zero_point": ("per_channel", 7, False),
    "bias": ("per_channel", -5, True),
    # Power-of-two scales put exact ties in the float graph: ONNX rounds them half to even, the
    # integer reference half up, so some elements differ by 1 LSB.
    "power_of_two_scales": ("power_of_two", 0, False),
}


def qdq_matmul(rng, m, k, n, weight_scales, x_zp, with_bias):
    """(model, int8 input, expected output of the integer reference) for
    Q(DQ(x) @ DQ(w) [+ bias]) with int8 x and an int8 constant w."""
    xq = rng.integers(-128, 128, (m, k)).astype(np.int8)
    wq = rng.integers(-127, 128, (k, n)).astype(np.int8)
    pow2 = weight_scales == "power_of_two"
    x_scale = np.float32(2.0**-6 if pow2 else 0.02)
    w_scale = {"per_channel": rng.uniform(0.002, 0.01, n), "per_tensor": np.array(0.005),
               "power_of_two": np.array(2.0**-7)}[weight_scales].astype(np.float32)
    real = ((xq.astype(np.float64) - x_zp) * x_scale) @ (wq.astype(np.float64) * w_scale)
    bias = normal(rng, (n,), real.std()) if with_bias else None
    y_scale = real.std() / 32  # about 4 standard deviations fit, the tail saturates
    y_scale = np.float32(2.0 ** np.round(np.log2(y_scale)) if pow2 else y_scale)
    y_zp = -3
    initializers = {"x_scale": x_scale, "x_zp": np.int8(x_zp), "w": wq, "w_scale": w_scale,
                    "w_zp": np.zeros(w_scale.shape, np.int8), "y_scale": y_scale, "y_zp": np.int8(y_zp)}
    nodes = [helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["x"]),
             helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zp"], ["w_f"], axis=1),
             helper.make_node("MatMul", ["x", "w_f"], ["y_f" if with_bias else "y"])]
    if with_bias:
        initializers["bias"] = bias
        nodes.append(helper.make_node("Add", ["y_f", "bias"], ["y"]))
    nodes.append(helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zp"], ["yq"]))
    model = make_model(nodes, {"xq": (I8, (m, k))}, {"yq": (I8, (m, n))}, initializers)

    # The integer reference, with parameters derived in float64 from the float32 scales.
    acc_scale = np.float64(x_scale) * w_scale.astype(np.float64)
    mul, shift = reference.quantize_multiplier(acc_scale / np.float64(y_scale))
    bias_q = None if bias is None else np.rint(bias.astype(np.float64) / acc_scale).astype(np.int32)
    requant = reference.Requant("fixed", bias=bias_q, mul=mul, add=None, shift=shift, out_zp=y_zp)
    expected = reference.gemm_s8(xq, wq, a_zp=x_zp, b_zp=0, requant=requant)
    return model, xq, expected


def lsb_differences(actual, other, what):
    """Assert |actual - other| <= 1 everywhere; print and return the fraction of elements that differ."""
    diff = np.abs(actual.astype(np.int32) - other.astype(np.int32))
    assert diff.max() <= 1, f"{what}: {int(diff.max())} LSB apart"
    fraction = float(np.count_nonzero(diff)) / diff.size
    print(f"{what}: {fraction:.4%} of {diff.size} elements differ by 1 LSB")
    return fraction


@pytest.mark.parametrize("variant", list(QDQ_VARIANTS))
def test_qdq_matmul(variant, rng, tmp_path):
    model, xq, expected = qdq_matmul(rng, 64, 256, 64, *QDQ_VARIANTS[variant])
    mod, deeploy, llvm, onnxruntime = run_everywhere(model, {"xq": xq}, tmp_path)
    assert offloaded(mod) == ["gemm_qdq"]
    assert deeploy.dtype == np.int8
    np.testing.assert_array_equal(deeploy, expected)
    assert lsb_differences(deeploy, onnxruntime, f"{variant} vs onnxruntime") < 0.01
    assert lsb_differences(deeploy, llvm, f"{variant} vs TVM llvm") < 0.01


# ---------------------------------------------------------------- attention


def test_single_head_attention_chain(rng, tmp_path):
    s, d = 16, 8
    nodes = [helper.make_node("Transpose", ["k"], ["k_t"], perm=[1, 0]),
             helper.make_node("MatMul", ["q", "k_t"], ["scores"]),
             helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
             helper.make_node("Softmax", ["scaled"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["out"])]
    model = make_model(nodes, {name: (F32, (s, d)) for name in "qkv"}, {"out": (F32, (s, d))},
                       {"scale": np.float32(1 / np.sqrt(d))})
    mod = assert_f32_matches(model, {name: normal(rng, (s, d)) for name in "qkv"}, tmp_path)
    assert offloaded(mod) == ["attention_chain"]


def multi_head_attention(rng, seq, embed, heads, mask):
    """x[1, S, E] -> Q/K/V projections -> heads -> softmax(Q K^T * scale [+ mask]) V -> output projection."""
    dim = embed // heads
    init = {f"w_{p}": normal(rng, (embed, embed), embed**-0.5) for p in "qkvo"}
    init.update(heads_shape=np.array([1, seq, heads, dim], np.int64), merged_shape=np.array([1, seq, embed], np.int64),
                scale=np.float32(1 / np.sqrt(dim)))
    nodes = []
    for p, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [helper.make_node("MatMul", ["x", f"w_{p}"], [f"{p}_proj"]),
                  helper.make_node("Reshape", [f"{p}_proj", "heads_shape"], [f"{p}_split"]),
                  helper.make_node("Transpose", [f"{p}_split"], [f"{p}_heads"], perm=perm)]
    nodes += [helper.make_node("MatMul", ["q_heads", "k_heads"], ["scores"]),
              helper.make_node("Mul", ["scores", "scale"], ["scaled"])]
    logits = "scaled"
    if mask is not None:
        init["mask"] = np.triu(np.full((seq, seq), mask, np.float32), k=1)
        nodes.append(helper.make_node("Add", ["scaled", "mask"], ["masked"]))
        logits = "masked"
    nodes += [helper.make_node("Softmax", [logits], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "v_heads"], ["context"]),
              helper.make_node("Transpose", ["context"], ["context_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["context_t", "merged_shape"], ["merged"]),
              helper.make_node("MatMul", ["merged", "w_o"], ["y"])]
    return make_model(nodes, {"x": (F32, (1, seq, embed))}, {"y": (F32, (1, seq, embed))}, init)


@pytest.mark.parametrize("mask", [None, -1e9, -np.inf], ids=["no_mask", "causal_-1e9", "causal_-inf"])
def test_multi_head_self_attention(mask, rng, tmp_path):
    model = multi_head_attention(rng, seq=16, embed=32, heads=4, mask=mask)
    mod = assert_f32_matches(model, {"x": normal(rng, (1, 16, 32))}, tmp_path)
    names = offloaded(mod)
    assert "attention_chain" in names
    assert names.count("matmul") + names.count("gemm") == 4  # Q, K, V and output projections


def test_qdq_multi_head_attention_is_one_int8_kernel(rng, tmp_path):
    """int8 Q, K, V dequantized, split into heads, causal-masked attention, merged, quantized: one
    fused int8 kernel (integer softmax), bit-exact against the reference, within 2 LSB of
    onnxruntime's and TVM's float computation."""
    seq, heads, dim = 32, 4, 8
    embed = heads * dim
    scales = {"q": 0.05, "k": 0.05, "v": 0.03, "out": 0.01}
    zps = {"q": 1, "k": -2, "v": 3, "out": -1}
    init = {f"{n}_scale": np.float32(scales[n]) for n in scales}
    init.update({f"{n}_zp": np.int8(zps[n]) for n in zps})
    init.update(heads_shape=np.array([1, seq, heads, dim], np.int64), merged_shape=np.array([1, seq, embed], np.int64),
                scale=np.float32(1 / np.sqrt(dim)), mask=np.triu(np.full((seq, seq), -1e9, np.float32), k=1))
    nodes = []
    for p, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [helper.make_node("DequantizeLinear", [f"{p}q", f"{p}_scale", f"{p}_zp"], [f"{p}_f"]),
                  helper.make_node("Reshape", [f"{p}_f", "heads_shape"], [f"{p}_split"]),
                  helper.make_node("Transpose", [f"{p}_split"], [f"{p}_heads"], perm=perm)]
    nodes += [helper.make_node("MatMul", ["q_heads", "k_heads"], ["scores"]),
              helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
              helper.make_node("Add", ["scaled", "mask"], ["masked"]),
              helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "v_heads"], ["context"]),
              helper.make_node("Transpose", ["context"], ["context_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["context_t", "merged_shape"], ["merged"]),
              helper.make_node("QuantizeLinear", ["merged", "out_scale", "out_zp"], ["y"])]
    model = make_model(nodes, {f"{p}q": (I8, (1, seq, embed)) for p in "qkv"}, {"y": (I8, (1, seq, embed))}, init)
    feeds = {f"{p}q": rng.integers(-128, 128, (1, seq, embed)).astype(np.int8) for p in "qkv"}
    mod, deeploy, llvm, onnxruntime = run_everywhere(model, feeds, tmp_path)
    assert offloaded(mod) == ["attention_chain_s8"]
    q, k, v = (feeds[f"{p}q"].reshape(1, seq, heads, dim).transpose(0, 2, 1, 3) for p in "qkv")
    quant = reference.attention_quant(scales["q"], scales["k"], scales["v"], scales["out"], zps["q"], zps["k"],
                                      zps["v"], zps["out"], float(np.float32(1 / np.sqrt(dim))), seq)
    expected = reference.attention_s8(q, k, v, quant, "top_left").transpose(0, 2, 1, 3).reshape(1, seq, embed)
    np.testing.assert_array_equal(deeploy, expected)
    for other in (onnxruntime, llvm):
        assert np.abs(deeploy.astype(np.int32) - other).max() <= 2


# ---------------------------------------------------------------- graphs only partly offloaded


def test_layer_norm_then_matmul(rng, tmp_path):
    model = make_model([helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["n"], axis=-1),
                        helper.make_node("MatMul", ["n", "w"], ["y"])],
                       {"x": (F32, (8, 32))}, {"y": (F32, (8, 16))},
                       {"gamma": normal(rng, (32,)), "beta": normal(rng, (32,)), "w": normal(rng, (32, 16))})
    mod = assert_f32_matches(model, {"x": normal(rng, (8, 32))}, tmp_path)
    assert offloaded(mod) == ["matmul"]


def test_conv_then_matmul(rng, tmp_path):
    model = make_model([helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]),
                        helper.make_node("Flatten", ["c"], ["f"]),
                        helper.make_node("MatMul", ["f", "w"], ["y"])],
                       {"x": (F32, (1, 2, 6, 6))}, {"y": (F32, (1, 10))},
                       {"k": normal(rng, (4, 2, 3, 3)), "w": normal(rng, (4 * 6 * 6, 10))})
    mod = assert_f32_matches(model, {"x": normal(rng, (1, 2, 6, 6))}, tmp_path)
    assert offloaded(mod) == ["matmul"]


def test_dynamic_batch_imports_and_stays_in_tvm(rng, tmp_path):
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       {"x": (F32, ("batch", 16))}, {"y": (F32, ("batch", 8))}, {"w": normal(rng, (16, 8))})
    mod = assert_f32_matches(model, {"x": normal(rng, (5, 16))}, tmp_path)
    assert offloaded(mod) == []


# ---------------------------------------------------------------- loading


def test_bytes_and_external_data(rng, tmp_path):
    w = normal(rng, (16, 8))
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       {"x": (F32, (4, 16))}, {"y": (F32, (4, 8))}, {"w": w})
    x = normal(rng, (4, 16))
    from_bytes = build_and_run(load_onnx(model.SerializeToString()), "llvm", [x], tmp_path, "bytes.so")
    path = tmp_path / "external.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    from_file = build_and_run(load_onnx(path), "llvm", [x], tmp_path, "external.so")
    assert_close_f32(from_bytes, x @ w)
    np.testing.assert_array_equal(from_file, from_bytes)


def small_model():
    return make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                      {"x": (F32, (4, 16))}, {"y": (F32, (4, 8))}, {"w": np.ones((16, 8), np.float32)})


def _invalid_model():
    model = small_model()
    model.graph.node[0].input[1] = "undefined"  # not an initializer, input or earlier output
    return model


def _unsupported_real_op():
    # QLinearMatMul is valid ONNX that TVM's importer has no converter for.
    names = ["a", "a_scale", "a_zp", "b", "b_scale", "b_zp", "y_scale", "y_zp"]
    return make_model([helper.make_node("QLinearMatMul", names, ["y"])],
                      {"a": (I8, (4, 16))}, {"y": (I8, (4, 8))},
                      {"a_scale": np.float32(0.1), "a_zp": np.int8(0), "b": np.ones((16, 8), np.int8),
                       "b_scale": np.float32(0.1), "b_zp": np.int8(0), "y_scale": np.float32(0.1),
                       "y_zp": np.int8(0)})


def _unsupported_custom_op():
    return make_model([helper.make_node("FrobnicateTensor", ["x"], ["y"], domain="com.example")],
                      {"x": (F32, (4,))}, {"y": (F32, (4,))}, domains=["com.example"])


def _unregistered_default_domain_op():
    return make_model([helper.make_node("FrobnicateTensor", ["x"], ["y"])], {"x": (F32, (4,))}, {"y": (F32, (4,))})


def _mismatched_weight():
    # Valid for the checker (it does not infer shapes), refused by TVM's shape inference.
    model = small_model()
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((5, 8), np.float32), "w"))
    return model


def _dynamic_topk():
    # k comes from the input's shape: imports when the shape is static, not when it is symbolic.
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Slice", ["shape", "one", "two"], ["k"]),
             helper.make_node("TopK", ["x", "k"], ["y", "indices"])]
    return make_model(nodes, {"x": (F32, ("rows", "cols"))}, {"y": (F32, ("rows", "k"))},
                      {"one": np.array([1], np.int64), "two": np.array([2], np.int64)})


BAD_CONTENTS = {
    "empty": (lambda: b"", ["empty", "0 bytes"]),
    "truncated": (lambda: (data := small_model().SerializeToString())[: len(data) // 2],
                  ["not a valid ONNX model", "truncated or corrupt protobuf"]),
    "random_bytes": (lambda: np.random.default_rng(7).bytes(1000),
                     ["not a valid ONNX model", "truncated or corrupt protobuf", "1000 bytes"]),
    "checker": (lambda: _invalid_model().SerializeToString(), ["not a valid ONNX model", "undefined"]),
    "unsupported_onnx_op": (lambda: _unsupported_real_op().SerializeToString(),
                            ["does not support", "QLinearMatMul"]),
    "unsupported_custom_op": (lambda: _unsupported_custom_op().SerializeToString(),
                              ["does not support", "FrobnicateTensor"]),
    "unregistered_op": (lambda: _unregistered_default_domain_op().SerializeToString(), ["FrobnicateTensor"]),
    "import_fails": (lambda: _mismatched_weight().SerializeToString(),
                     ["TVM cannot import the model at operator MatMul", "reduction"]),
    "dynamic_shape": (lambda: _dynamic_topk().SerializeToString(),
                      ["TVM cannot import the model", "dynamic shapes", "x[rows, cols]"]),
}


@pytest.mark.parametrize("case", list(BAD_CONTENTS))
def test_bad_model_file(case, tmp_path, capsys):
    contents, expected = BAD_CONTENTS[case]
    path = tmp_path / f"{case}.onnx"
    path.write_bytes(contents())
    with pytest.raises(ModelError) as info:
        load_onnx(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for part in expected:
        assert part in message, message
    assert "\n" not in message
    assert capsys.readouterr().out == ""  # the importer's own report is folded into the message


def test_bad_model_bytes():
    with pytest.raises(ModelError, match="^<bytes>: not a valid ONNX model: truncated or corrupt protobuf"):
        load_onnx(small_model().SerializeToString()[:-5])


def test_missing_file(tmp_path):
    path = tmp_path / "absent.onnx"
    with pytest.raises(ModelError, match="absent.onnx: cannot read the file: No such file or directory"):
        load_onnx(str(path))


def test_dynamic_shape_model_imports_when_static():
    model = _dynamic_topk()
    for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim, (4, 6)):
        dim.dim_value = size
    load_onnx(model.SerializeToString())


@pytest.mark.parametrize("opset", [12, 15])
def test_checker_complaint_is_a_warning_when_tvm_imports(opset, rng, tmp_path):
    """LayerNormalization exists from opset 17 for the checker; TVM's importer converts it anyway."""
    x, gamma, beta = normal(rng, (4, 8)), normal(rng, (8,)), normal(rng, (8,))
    model = make_model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)],
                       {"x": (F32, (4, 8))}, {"y": (F32, (4, 8))}, {"g": gamma, "b": beta})
    model.opset_import[0].version = opset
    with pytest.warns(ModelWarning) as record:
        mod = load_onnx(model.SerializeToString())
    expected = (f"<bytes>: the ONNX checker complains (No Op registered for LayerNormalization with domain_version "
                f"of {opset}); TVM imported the model anyway")
    assert [str(w.message) for w in record] == [expected]
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    assert_close_f32(build_and_run(mod, "llvm", [x], tmp_path), (x - mean) / np.sqrt(var + 1e-5) * gamma + beta)


def test_nodes_out_of_order_are_sorted(rng, tmp_path):
    w = normal(rng, (16, 8))
    nodes = [helper.make_node("Relu", ["h"], ["y"]), helper.make_node("MatMul", ["x", "w"], ["h"])]
    model = make_model(nodes, {"x": (F32, (4, 16))}, {"y": (F32, (4, 8))}, {"w": w})
    x = normal(rng, (4, 16))
    assert_close_f32(build_and_run(load_onnx(model.SerializeToString()), "llvm", [x], tmp_path),
                     np.maximum(x @ w, 0))


def test_cycle_and_every_unsupported_op_are_named():
    cycle = make_model([helper.make_node("Relu", ["b"], ["a"], name="first"),
                        helper.make_node("Relu", ["a"], ["b"], name="second")], {"x": (F32, (4,))}, {"b": (F32, (4,))})
    with pytest.raises(ModelError, match="^<bytes>: the graph has a cycle through node\\(s\\) first, second$"):
        load_onnx(cycle.SerializeToString())
    unsupported = make_model([helper.make_node("FrobnicateTensor", ["x"], ["h"], domain="com.example"),
                              helper.make_node("Twiddle", ["h"], ["y"], domain="com.example")],
                             {"x": (F32, (4,))}, {"y": (F32, (4,))}, domains=["com.example"])
    with pytest.raises(ModelError, match="^<bytes>: TVM's ONNX importer does not support operator\\(s\\) "
                                         "FrobnicateTensor, Twiddle$"):
        load_onnx(unsupported.SerializeToString())
