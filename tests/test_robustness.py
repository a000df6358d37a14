"""Bad or unusual input never crashes or lies: TVM's semantics kept, every refusal one clear line."""

import subprocess

import numpy as np
import pytest
import tvm
from conftest import assert_close_f32, build_and_run, offloaded
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from test_export import make, run_driver
from test_onnx import F32, make_model, save
from test_patterns import graph
from tvm import relax

import tvm_deeploy
from tvm_deeploy.cli import main
from tvm_deeploy.frontend.onnx_import import ModelError, load_onnx
from tvm_deeploy.lm.llama import kv_write
from tvm_deeploy.program.export import export_c
from tvm_deeploy.program.lower import UnsupportedModelError, standalone_form


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q_len=st.integers(1, 6), kv_len=st.integers(1, 6), heads=st.integers(1, 3),
       causal=st.sampled_from([None, "TopLeft", "BottomRight"]), mask=st.sampled_from([None, "head", "shared"]))
@example(q_len=6, kv_len=3, heads=2, causal="BottomRight", mask=None)  # the case
@example(q_len=6, kv_len=3, heads=2, causal="TopLeft", mask="head")
def test_attention_matches_tvm_for_every_shape_and_mask(q_len, kv_len, heads, causal, mask, tmp_path_factory):
    """TVM's BottomRight is tril(k=|S - L|); with more queries than keys the kernel would differ, so
    that case stays in TVM. Every other combination is offloaded and equals the llvm build."""
    dim = 4
    inputs = [((1, q_len, heads, dim), "float32"), ((1, kv_len, heads, dim), "float32"),
              ((1, kv_len, heads, dim), "float32")]
    if mask is not None:
        inputs.append(((1, heads if mask == "head" else 1, q_len, kv_len), "float32"))

    def body(bb, q, k, v, *bias):
        return relax.op.nn.attention(q, k, v, bias[0] if bias else None, causal_mask=causal)

    mod = graph(inputs, body)
    keeps_tvm_semantics = not (causal == "BottomRight" and q_len > kv_len)
    assert offloaded(mod) == (["attention"] if keeps_tvm_semantics else [])
    rng = np.random.default_rng(q_len * 100 + kv_len * 10 + heads)
    arrays = [rng.standard_normal(shape).astype(dtype) for shape, dtype in inputs]
    tmp_path = tmp_path_factory.mktemp("attention")
    assert_close_f32(build_and_run(mod, "deeploy", arrays, tmp_path), build_and_run(mod, "llvm", arrays, tmp_path))


def _qdq_linear(out_scale=0.05, weight_scale=0.02):
    """quantize -> dequantize -> matmul(constant int8 weight, dequantized) -> quantize."""
    weight = relax.const(np.random.default_rng(0).integers(-7, 8, (8, 4)).astype("int8"))

    def body(bb, x):
        zero = relax.const(0, "int8")
        xq = bb.emit(relax.op.quantize(x, relax.const(0.1, "float32"), zero, axis=-1, out_dtype="int8"))
        xd = bb.emit(relax.op.dequantize(xq, relax.const(0.1, "float32"), zero, axis=-1))
        wd = bb.emit(relax.op.dequantize(weight, relax.const(weight_scale, "float32"), zero, axis=1))
        y = bb.emit(relax.op.matmul(xd, wd))
        return relax.op.quantize(y, relax.const(out_scale, "float32"), zero, axis=-1, out_dtype="int8")
    return graph([((4, 8), "float32")], body)


@pytest.mark.parametrize("scales, message", [
    ({"out_scale": 0.0}, "quantize in main has scale 0 (1 of 1 values are not positive and finite)"),
    ({"weight_scale": -0.02}, "dequantize in main has scale -0.02 (1 of 1 values are not positive and finite)"),
    ({"out_scale": float("inf")}, "quantize in main has scale inf (1 of 1 values are not positive and finite)"),
    ({"out_scale": float("nan")}, "quantize in main has scale nan (1 of 1 values are not positive and finite)"),
])
def test_bad_qdq_scale_is_named(scales, message, tmp_path):
    with pytest.raises(UnsupportedModelError) as info:
        export_c(_qdq_linear(**scales), tvm_deeploy.target(), tmp_path / "out")
    assert str(info.value) == message
    assert not (tmp_path / "out").exists()


def test_zero_size_dimension_is_named(tmp_path):
    mod = graph([((0, 4), "float32")], lambda bb, x: relax.op.add(x, x))
    with pytest.raises(UnsupportedModelError, match=r"^input 'x0' in main has a dimension of size 0 \(0, 4\); "
                                                    "the standalone program has no zero-size tensors$"):
        export_c(mod, tvm_deeploy.target(), tmp_path / "out")


def test_int4_weights_are_named():
    weight = helper.make_tensor("w", TensorProto.INT4, (16, 8), [1] * 128)
    model = make_model([helper.make_node("DequantizeLinear", ["w", "s"], ["wd"]),
                        helper.make_node("MatMul", ["x", "wd"], ["y"])],
                       {"x": (F32, (4, 16))}, {"y": (F32, (4, 8))}, {"s": np.float32(0.1)})
    model.graph.initializer.append(weight)
    with pytest.raises(ModelError, match=r"^<bytes>: TVM's ONNX importer cannot read packed sub-byte tensors: "
                                         r"'w' \(int4\)$"):
        load_onnx(model.SerializeToString())


def _embedding_onnx(tmp_path, vocab=16, dim=4):
    table = np.random.default_rng(3).standard_normal((vocab, dim)).astype(np.float32)
    model = make_model([helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)],
                       {"ids": (TensorProto.INT64, (1, 8))}, {"y": (F32, (1, 8, dim))}, {"table": table})
    return save(model, tmp_path, "embedding.onnx")


def test_gather_inputs_stay_in_the_table_and_user_inputs_are_used(tmp_path, capfd):
    """Random token ids are drawn inside the vocabulary; --inputs gives the ids instead."""
    model = _embedding_onnx(tmp_path)
    assert main(["compile", str(model), "-o", str(tmp_path / "random")]) == 0
    assert main(["run", str(tmp_path / "random")]) == 0
    assert "Errors: 0 out of 32" in capfd.readouterr().out
    ids = np.array([[15, 0, 3, 3, 7, 1, 2, 14]], np.int64)
    np.savez(tmp_path / "ids.npz", ids)
    assert main(["compile", str(model), "-o", str(tmp_path / "given"), "--inputs", str(tmp_path / "ids.npz")]) == 0
    vectors = (tmp_path / "given" / "test" / "net_test_vectors.h").read_text()
    assert "15, 0, 3, 3, 7, 1, 2, 14" in vectors.replace("LL", "").replace("L", "")
    assert main(["run", str(tmp_path / "given")]) == 0
    assert "Errors: 0 out of 32" in capfd.readouterr().out


def test_inputs_file_errors_are_one_line(tmp_path, capsys):
    model = _embedding_onnx(tmp_path)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    np.savez(tmp_path / "wrong.npz", np.zeros((2, 8), np.int64))
    for inputs, message in [(tmp_path / "absent.npz", "cannot read test inputs"),
                            (tmp_path / "plain.npy", "not an .npz archive"),
                            (tmp_path / "wrong.npz", "test input")]:
        assert main(["compile", str(model), "-o", str(tmp_path / "out"), "--inputs", str(inputs)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_indices_outside_the_table_are_clamped():
    """The standalone program's `take` clamps (documented in README); TVM's default mode does not check."""
    table = np.arange(20, dtype="float32").reshape(5, 4)
    mod = graph([((4,), "int64")], lambda bb, ids: relax.op.take(relax.const(table), ids, axis=0))
    ids = np.array([-3, 99, 2, 4], np.int64)
    clamped = standalone_form(mod)
    vm = relax.VirtualMachine(tvm.relax.build(clamped, target="llvm"), tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(ids)).numpy(), table[np.clip(ids, 0, 4)])


GLUE_CASES = {
    "pad with -inf": (((2, 3), lambda bb, x: relax.op.nn.pad(x, [0, 0, 1, 1], pad_value=float("-inf"))), 10),
    "clip at -inf": (((2, 3), lambda bb, x: relax.op.clip(x, float("-inf"), 1.0)), 6),
    "mean over all axes": (((4, 8), lambda bb, x: relax.op.add(relax.op.mean(x), relax.const(1.0))), 1),
    "mean over all axes kept": (((1, 4, 8), lambda bb, x: relax.op.mean(x, keepdims=True)), 1),
}


@pytest.mark.parametrize("name", sorted(GLUE_CASES))
def test_tvm_glue_builds_with_werror(name, tmp_path):
    """Infinite constants and reductions over every axis: TVM's C needs the glue's edits to build."""
    (shape, body), outputs = GLUE_CASES[name]
    export_c(graph([(shape, "float32")], body), tvm_deeploy.target(), tmp_path / "p", offload=False)
    for opt in ("-O1", "-O2"):
        subprocess.run(["make", "-s", "-C", str(tmp_path / "p"), "clean"], check=True)
        code, output = run_driver(make(tmp_path / "p", opt=opt))
        assert code == 0 and f"Errors: 0 out of {outputs}\n" in output, output


def test_onnx_zero_scale_is_one_cli_line(tmp_path, capsys):
    model = make_model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
                       {"x": (F32, (4, 8))}, {"y": (F32, (4, 8))}, {"s": np.float32(0.0), "z": np.int8(0)})
    assert main(["compile", str(save(model, tmp_path)), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("tvm-deeploy compile: error: quantize in main has scale 0 (1 of 1 values are "
                                       "not positive and finite)\n")


@pytest.mark.parametrize("position, rows", [(3, [3, 3]), (-5, [0, 0]), (1, [1, 2])])
def test_kv_cache_write_clamps_the_position(position, rows):
    """The decode position is a run-time input: rows outside the context go to its edge, never outside."""
    write = kv_write(kv_heads=1, context=4, head_dim=2, tokens=2).with_attr("global_symbol", "write")
    built = tvm.tirx.build(tvm.IRModule({"write": write}), target="llvm")
    cache = np.zeros((1, 1, 4, 2), np.float32)
    new_rows = np.array([[1, 2], [3, 4]], np.float32)
    tensors = [tvm.runtime.tensor(a) for a in (cache, new_rows, np.array([position], np.int32))]
    built["write"](*tensors)
    expected = cache.copy()
    for token, row in enumerate(rows):
        expected[0, 0, row] = new_rows[token]
    np.testing.assert_array_equal(tensors[0].numpy(), expected)
