"""Models as users export them: every fixture of ../shared/models (its README says how each was made)
imports, offloads what it should, builds for deeploy in TVM's VM matching onnxruntime, and compiles with
`tvm-deeploy compile` into a C program that `tvm-deeploy run --on host` checks with `Errors: 0`."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import tvm
from conftest import build_and_run
from tvm import relax

import tvm_deeploy
from tvm_deeploy import cli
from tvm_deeploy.offload.functions import describe_function, offloaded_functions
from tvm_deeploy.offload.qdq import unshare_qdq
from tvm_deeploy.plan.report import call_sites
from tvm_deeploy.program import export

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())["models"]

# Offloaded call sites per (op, dtype[, B operand]): "weight" is a constant B, "activations" a computed one.
F32_ATTENTION, F32_WEIGHT = ("attention", "float32"), ("gemm", "float32", "weight")
S8_WEIGHT, S8_ACTIVATIONS = ("gemm", "int8", "weight"), ("gemm", "int8", "activations")
F32_SOFTMAX, F32_ADD, QUANTIZE = ("softmax", "float32"), ("residual_add", "float32"), ("quantize", "float32")
# Every add of two activations of one shape is an element-wise kernel (the residual adds; in HF's Llamas also the
# rotary embedding's sums), and so is every quantize no kernel absorbs (QDQ graphs: after every op).
LLAMA_F32 = {F32_ATTENTION: 3, F32_WEIGHT: 22, F32_ADD: 12}
LLAMA_QDQ = {S8_WEIGHT: 22, S8_ACTIVATIONS: 6, F32_SOFTMAX: 3, F32_ADD: 12, QUANTIZE: 138}
EXPECTED = {
    "encoder_dynamo.onnx": {F32_ATTENTION: 1, F32_WEIGHT: 4, F32_ADD: 2},
    "llama_eager_dynamo.onnx": LLAMA_F32,
    "llama_eager_legacy_ortopt.onnx": LLAMA_F32,
    "llama_sdpa_dynamo.onnx": LLAMA_F32,  # the isnan/where guard and the split Q/K scale absorbed
    "llama_sdpa_dynamo_decode.onnx": {F32_ATTENTION: 3, F32_WEIGHT: 22, F32_ADD: 6},
    "llama_sdpa_legacy_ortopt.onnx": LLAMA_F32,
    # every projection an int8 GEMM (shared dequantize ops and repeated quantize ops undone); QDQ attention
    # stays op by op: int8 Q·Kᵀ and P·V GEMMs, the softmax in fp32
    "llama_eager_qdq.onnx": LLAMA_QDQ,
    "llama_eager_qdq_pc.onnx": LLAMA_QDQ,
    "llama_eager_qdq_pc_dedicated.onnx": LLAMA_QDQ,
    "llama_eager_qdynamic.onnx": {F32_ATTENTION: 3, S8_WEIGHT: 22, F32_ADD: 12},  # every MatMulInteger int8
    "mlp_dynamo.onnx": {F32_WEIGHT: 3},
    "mlp_qdq_pc.onnx": {S8_WEIGHT: 3, QUANTIZE: 1},
    "sdpa_causal_dynamo.onnx": {F32_ATTENTION: 1, F32_WEIGHT: 2},
    "vit_dynamo.onnx": {F32_ATTENTION: 2, F32_WEIGHT: 9, F32_ADD: 4},
    "vit_qdq_pc.onnx": {S8_ACTIVATIONS: 4, S8_WEIGHT: 9, F32_SOFTMAX: 2, F32_ADD: 5, QUANTIZE: 52},
}
# Compiling builds the model twice in TVM (deeploy and llvm, for the test vectors): the Llamas take 20-90 s.
SLOW = {name for name in MANIFEST if name.startswith("llama_")}
FP32_RELATIVE = 1e-4


def fixtures():
    return [pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else []) for name in sorted(MANIFEST)]


def test_every_fixture_has_an_expectation():
    assert sorted(EXPECTED) == sorted(MANIFEST)


def offloaded_call_sites(mod) -> dict:
    partitioned = tvm_deeploy.partition_for_deeploy(mod)
    calls, found = call_sites(partitioned), collections.Counter()
    for _, func in offloaded_functions(partitioned):
        fn = describe_function(func)
        spec = fn.spec
        key = (spec.kind, getattr(spec, "dtype", "float32"))
        if spec.kind == "gemm":
            key += ("weight" if spec.b.const is not None else "activations",)
        found[key] += calls[fn.symbol]
    return dict(found)


def model_inputs(info: dict) -> dict:
    rng = np.random.default_rng(0)
    return {i["name"]: (rng.integers(i["low"], i["high"], i["shape"]) if i["kind"] == "int"
                        else rng.standard_normal(i["shape"])).astype(i["dtype"]) for i in info["inputs"]}


def onnxruntime_outputs(path: Path, feeds: dict) -> list:
    # Unoptimized: onnxruntime's fused QDQ kernels round differently from the graph's own definition.
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("name", fixtures())
def test_fixture_imports_offloads_builds_and_runs_on_host(name, tmp_path, capfd, monkeypatch):
    info = MANIFEST[name]
    mod = tvm_deeploy.load_onnx(MODELS / name)
    assert offloaded_call_sites(mod) == EXPECTED[name]

    # `tvm-deeploy compile` runs relax.build(mod, target="deeploy") and TVM's llvm build in the VM on the
    # test inputs; the test keeps those outputs rather than building the model a third and fourth time.
    builds = []

    def reference_outputs(*args, **kwargs):
        builds.append(original(*args, **kwargs))
        return builds[-1]

    original = export.reference_outputs
    monkeypatch.setattr(export, "reference_outputs", reference_outputs)
    feeds = model_inputs(info)
    np.savez(tmp_path / "inputs.npz", *feeds.values())
    out = tmp_path / "project"
    assert cli.main(["compile", str(MODELS / name), "-o", str(out), "--inputs", str(tmp_path / "inputs.npz")]) == 0
    ((deeploy, llvm),) = builds
    assert json.loads((out / "report.json").read_text())["counts"]["deeploy"] == sum(EXPECTED[name].values())

    expected = onnxruntime_outputs(MODELS / name, feeds)
    assert len(deeploy) == len(expected) == len(info["outputs"])
    for got, tvm_llvm, want, output in zip(deeploy, llvm, expected, info["outputs"]):
        assert got.shape == want.shape and got.dtype == want.dtype
        if output["lsb"] is None:
            assert np.abs(got - want).max() <= FP32_RELATIVE * np.abs(want).max(), output["name"]
        else:  # int8: within 1 LSB of TVM's own (float-defined) build of the same module
            assert np.abs(got - tvm_llvm).max() <= output["lsb"] * (1 + 1e-5), output["name"]

    capfd.readouterr()
    assert cli.main(["run", str(out), "--on", "host"]) == 0
    assert f"Errors: 0 out of {sum(got.size for got in deeploy)}" in capfd.readouterr().out


def shared_qdq_module(tokens: int = 8, dim: int = 16) -> tvm.IRModule:
    """onnxruntime's habits in small: one dequantized activation feeds two QDQ matmuls (q and k), and the
    first one's output feeds two identical quantize ops (DedicatedQDQPair)."""
    rng = np.random.default_rng(1)
    x = relax.Var("x", relax.TensorType((tokens, dim), "int8"))
    bb = relax.BlockBuilder()

    def const(value, dtype):
        return relax.const(np.asarray(value, dtype))

    with bb.function("main", [x]):
        with bb.dataflow():
            shared = bb.emit(relax.op.dequantize(x, const(0.05, "float32"), const(3, "int8")))
            outputs = []
            for _ in range(2):
                w = rng.integers(-127, 128, (dim, dim)).astype("int8")
                weight = bb.emit(relax.op.dequantize(relax.const(w), const(rng.uniform(0.002, 0.01, dim), "float32"),
                                                     const(np.zeros(dim), "int8"), axis=1))
                outputs.append(bb.emit(relax.op.matmul(shared, weight)))
            pair = [bb.emit(relax.op.quantize(outputs[0], const(0.04, "float32"), const(-5, "int8"),
                                              out_dtype="int8")) for _ in range(2)]
            k = bb.emit(relax.op.quantize(outputs[1], const(0.04, "float32"), const(2, "int8"), out_dtype="int8"))
            result = bb.emit_output(relax.Tuple([*pair, k]))
        bb.emit_func_output(result)
    return bb.get()


def test_shared_dequantize_and_repeated_quantize_become_int8_gemms(tmp_path):
    mod = shared_qdq_module()
    assert offloaded_call_sites(mod) == {S8_WEIGHT: 2}
    x = np.random.default_rng(2).integers(-128, 128, (8, 16)).astype("int8")
    # the rewrite computes what the graph computes: TVM's own pipeline on it equals TVM's llvm build exactly
    unshared = unshare_qdq(mod)
    assert sum(1 for line in unshared.script().splitlines() if "R.quantize(" in line) == 2
    for after, before in zip(build_and_run(unshared, "llvm", [x], tmp_path, "unshared"),
                             build_and_run(mod, "llvm", [x], tmp_path), strict=True):
        np.testing.assert_array_equal(after, before)
    got, want = build_and_run(mod, "deeploy", [x], tmp_path), build_and_run(mod, "llvm", [x], tmp_path)
    for offloaded, tvm_llvm in zip(got, want, strict=True):
        assert np.abs(offloaded.astype(int) - tvm_llvm).max() <= 1


def test_external_data_model_compiles_and_runs(tmp_path, capfd):
    """The dynamo exporter writes `model.onnx` + `model.onnx.data`: `tvm-deeploy compile` reads the weights
    from beside the model."""
    model = onnx.load_model(str(MODELS / "mlp_dynamo.onnx"))
    path = tmp_path / "mlp.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="mlp.onnx.data", size_threshold=0)
    assert (tmp_path / "mlp.onnx.data").stat().st_size > path.stat().st_size
    out = tmp_path / "project"
    assert cli.main(["compile", str(path), "-o", str(out)]) == 0
    capfd.readouterr()
    assert cli.main(["run", str(out), "--on", "host"]) == 0
    assert "Errors: 0 out of 80" in capfd.readouterr().out


def matmul_integer_module(tokens: int = 6, k: int = 24, n: int = 10) -> tvm.IRModule:
    """MatMulInteger as TVM imports it: (astype(x_q) - astype(x_zp)) @ (astype(W) - astype(0)) in int32, x_q
    uint8 and its zero point inputs (DynamicQuantizeLinear computes them at run time)."""
    w = np.random.default_rng(3).integers(-128, 128, (k, n)).astype("int8")
    x = relax.Var("x", relax.TensorType((1, tokens, k), "uint8"))
    zp = relax.Var("zp", relax.TensorType((1,), "uint8"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, zp]):
        with bb.dataflow():
            scalar_zp = bb.emit(relax.op.reshape(zp, ()))
            a = bb.emit(relax.op.subtract(relax.op.astype(x, "int32"), relax.op.astype(scalar_zp, "int32")))
            b = bb.emit(relax.op.subtract(relax.op.astype(relax.const(w), "int32"),
                                          relax.op.astype(relax.const(np.int8(0)), "int32")))
            result = bb.emit_output(relax.op.matmul(a, b, out_dtype="int32"))
        bb.emit_func_output(result)
    return bb.get()


@pytest.mark.parametrize("zero_point", [0, 128, 255])
def test_matmul_integer_is_an_exact_int8_gemm(zero_point, tmp_path):
    mod = matmul_integer_module()
    assert offloaded_call_sites(mod) == {S8_WEIGHT: 1}
    x = np.random.default_rng(zero_point).integers(0, 256, (1, 6, 24)).astype("uint8")
    inputs = [x, np.array([zero_point], "uint8")]
    np.testing.assert_array_equal(build_and_run(mod, "deeploy", inputs, tmp_path),
                                  build_and_run(mod, "llvm", inputs, tmp_path))


def test_compile_report_and_report_json_count_call_sites(tmp_path):
    """Identical ops share one offloaded function (as a Llama's layers share their attention): the reports
    count its calls as well as the function."""
    w = relax.const(np.random.default_rng(4).standard_normal((16, 16)).astype("float32"))
    x = relax.Var("x", relax.TensorType((4, 16), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.nn.relu(bb.emit(relax.op.matmul(x, w))))
            result = bb.emit_output(relax.op.matmul(h, w))
        bb.emit_func_output(result)
    mod = bb.get()
    (entry,) = tvm_deeploy.compile_report(mod).values()
    assert entry["call_sites"] == 2
    counts = tvm_deeploy.export_c(mod, tvm_deeploy.target(), tmp_path, test_vectors=False).report["counts"]
    assert (counts["deeploy"], counts["deeploy_functions"], counts["tvm"]) == (2, 1, 1)


def sdpa_module(guard_value: float, heads: int = 2, seq: int = 8, dim: int = 4) -> tvm.IRModule:
    """torch's SDPA export: √scale on Q and on Kᵀ, the mask, softmax, then where(isnan(p), guard, p)."""
    shape = (1, heads, seq, dim)
    q, k, v = (relax.Var(name, relax.TensorType(shape, "float32")) for name in "qkv")
    mask = np.triu(np.full((seq, seq), -np.inf, "float32"), 1)
    half_scale = relax.const(np.float32(dim ** -0.25))
    bb = relax.BlockBuilder()
    with bb.function("main", [q, k, v]):
        with bb.dataflow():
            kt = bb.emit(relax.op.multiply(bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2])), half_scale))
            scores = bb.emit(relax.op.matmul(bb.emit(relax.op.multiply(q, half_scale)), kt))
            p = bb.emit(relax.op.nn.softmax(bb.emit(relax.op.add(scores, relax.const(mask))), axis=-1))
            guarded = bb.emit(relax.op.where(relax.op.isnan(p), relax.const(np.float32(guard_value)), p))
            result = bb.emit_output(relax.op.matmul(guarded, v))
        bb.emit_func_output(result)
    return bb.get()


@pytest.mark.parametrize("guard_value, fused", [(0.0, True), (1.0, False)])
def test_sdpa_guard_and_split_scale_fuse_into_attention(guard_value, fused, tmp_path):
    mod = sdpa_module(guard_value)
    assert (offloaded_call_sites(mod) == {F32_ATTENTION: 1}) is fused
    inputs = list(np.random.default_rng(5).standard_normal((3, 1, 2, 8, 4)).astype("float32"))
    got, want = build_and_run(mod, "deeploy", inputs, tmp_path), build_and_run(mod, "llvm", inputs, tmp_path)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_q_times_a_tensor_is_no_attention_scale(tmp_path):
    """A multiply of Q by a per-feature tensor (not a scalar) is no softmax scale: the fused attention takes
    Q after it (TVM computes the product), and the result is TVM's."""
    shape = (1, 2, 8, 4)
    q, k, v = (relax.Var(name, relax.TensorType(shape, "float32")) for name in "qkv")
    bb = relax.BlockBuilder()
    with bb.function("main", [q, k, v]):
        with bb.dataflow():
            scaled_q = bb.emit(relax.op.multiply(q, relax.const(np.arange(1, 5, dtype="float32"))))
            scores = bb.emit(relax.op.matmul(scaled_q, bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2]))))
            result = bb.emit_output(relax.op.matmul(bb.emit(relax.op.nn.softmax(scores, axis=-1)), v))
        bb.emit_func_output(result)
    mod = bb.get()
    assert offloaded_call_sites(mod) == {F32_ATTENTION: 1}
    inputs = list(np.random.default_rng(6).standard_normal((3, *shape)).astype("float32"))
    got, want = build_and_run(mod, "deeploy", inputs, tmp_path), build_and_run(mod, "llvm", inputs, tmp_path)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
