"""Deeploy's own test networks (../shared/deeploy-tests): the QuantLib/Deeploy integer dialect imported as
integer Relax, bit-exact against Deeploy's golden outputs in TVM's VM and as an exported C program."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax

import tvm_deeploy
from tvm_deeploy.cli import main
from tvm_deeploy.frontend import deeploy_dialect

ROOT = Path(__file__).resolve().parents[2] / "shared" / "deeploy-tests"
NETWORKS = sorted(str(p.parent.relative_to(ROOT)) for p in ROOT.glob("**/network.onnx")) if ROOT.is_dir() else []
# Seconds-long VM builds (hundreds of integer glue ops): run in CI with the slow cases.
HEAVY = ("Models/microLlama/INT8/", "Models/CCT/Int/", "Models/CNN_Linear", "Kernels/Integer/Attention")

pytestmark = pytest.mark.skipif(not NETWORKS, reason=f"no Deeploy test networks under {ROOT}")


def _cases(networks):
    return [pytest.param(n, marks=pytest.mark.slow) if n.startswith(HEAVY) else n for n in networks]


def _arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as archive:
        return [archive[name] for name in archive.files]


def _is_fp32(network: str) -> bool:
    return "FP32" in network.split("/") or "Dequant" in network


def _load(network: str):
    folder = ROOT / network
    samples = _arrays(folder / "inputs.npz")
    mod = tvm_deeploy.load_onnx(folder / "network.onnx", inputs=samples)
    inputs, _ = deeploy_dialect.harness_inputs(mod, samples)
    return mod, inputs, _arrays(folder / "outputs.npz")


def _wrong(actual: np.ndarray, expected: np.ndarray, fp32: bool) -> int:
    """Deeploy's comparison: flattened; float32 within 1e-4 absolute, integers exactly."""
    a, e = actual.reshape(-1), expected.reshape(-1)
    if fp32:
        return int(np.sum(~(np.abs(a.astype(np.float32) - e.astype(np.float32)).astype(np.float64) <= 1e-4)))
    return int(np.sum(a.astype(np.float64) != e.astype(np.float64)))  # Mixed/Quant computes integers in float


@pytest.mark.parametrize("network", _cases(NETWORKS))
def test_vm_matches_deeploy_goldens(network):
    mod, inputs, expected = _load(network)
    vm = relax.VirtualMachine(relax.build(mod, "llvm"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs])
    outputs = [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]
    assert len(outputs) == len(expected)
    assert [_wrong(a, e, _is_fp32(network)) for a, e in zip(outputs, expected)] == [0] * len(expected)


@pytest.mark.parametrize("network", _cases(["Kernels/Integer/Softmax/Regular", "Kernels/Integer/GEMM/Batch_RQ",
                                            "Kernels/FP32/RMSNorm/single_fused_op", "Kernels/Integer/ReduceMean",
                                            "Kernels/Integer/Pad/Regular_1D",
                                            "Models/microLlama/INT8/microLlama1_parallel"]))
def test_exported_program_matches_deeploy_goldens(network, tmp_path, capfd):
    """`tvm-deeploy compile --inputs --outputs`: the host program compares with Deeploy's outputs (ReduceMean:
    an integer test without dialect ops, typed from its inputs because its goldens are integers)."""
    folder = ROOT / network
    assert main(["compile", str(folder / "network.onnx"), "-o", str(tmp_path / "out"),
                 "--inputs", str(folder / "inputs.npz"), "--outputs", str(folder / "outputs.npz")]) == 0
    total = sum(a.size for a in _arrays(folder / "outputs.npz"))
    capfd.readouterr()
    assert main(["run", str(tmp_path / "out")]) == 0
    assert f"Errors: 0 out of {total}" in capfd.readouterr().out


def test_golden_mismatch_is_counted(tmp_path, capfd):
    """A golden output off by one in one element: the driver reports exactly that error."""
    folder = ROOT / "Kernels/Integer/Softmax/Regular"
    golden = _arrays(folder / "outputs.npz")
    golden[0] = golden[0].copy()
    golden[0].reshape(-1)[5] += 1
    np.savez(tmp_path / "outputs.npz", *golden)
    assert main(["compile", str(folder / "network.onnx"), "-o", str(tmp_path / "out"),
                 "--inputs", str(folder / "inputs.npz"), "--outputs", str(tmp_path / "outputs.npz")]) == 0
    capfd.readouterr()
    assert main(["run", str(tmp_path / "out")]) == 1
    assert f"Errors: 1 out of {golden[0].size}" in capfd.readouterr().out


def test_outputs_errors_are_one_line(tmp_path, capsys):
    folder = ROOT / "Kernels/Integer/Softmax/Regular"
    model, inputs = str(folder / "network.onnx"), str(folder / "inputs.npz")
    np.savez(tmp_path / "short.npz", np.zeros(7, np.float32))
    np.savez(tmp_path / "fraction.npz", np.full(192, 0.5, np.float32))
    for extra, message in [(["--outputs", str(folder / "outputs.npz")], "--outputs needs --inputs"),
                           (["--inputs", inputs, "--outputs", str(tmp_path / "short.npz")], "7 elements"),
                           (["--inputs", inputs, "--outputs", str(tmp_path / "fraction.npz")], "does not hold")]:
        assert main(["compile", model, "-o", str(tmp_path / "out"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_dialect_is_named_once_and_not_an_invalid_model(caplog, recwarn):
    folder = ROOT / "Kernels/Integer/TrueIntegerDiv"
    with caplog.at_level(logging.INFO, logger="tvm_deeploy.frontend"):
        mod = tvm_deeploy.load_onnx(folder / "network.onnx", inputs=_arrays(folder / "inputs.npz"))
    lines = [r.getMessage() for r in caplog.records if r.name == "tvm_deeploy.frontend"]
    assert len(lines) == 1 and "integer dialect (RequantShift, TrueIntegerDiv)" in lines[0]
    assert not [w for w in recwarn if issubclass(w.category, tvm_deeploy.ModelWarning)]
    assert [str(p.ty.dtype) for p in mod["main"].params] == ["int16"]  # its input spans -16378 ... 16342


def test_input_dtypes_type_the_inputs_without_samples():
    folder = ROOT / "Kernels/Integer/Softmax/Regular"
    mod = tvm_deeploy.load_onnx(folder / "network.onnx", input_dtypes={"input": "int8"})
    assert [str(p.ty.dtype) for p in mod["main"].params] == ["int8"]
    assert str(mod["main"].ret_ty.dtype) == "uint8"  # iSoftmax: 256 unsigned levels


@pytest.mark.parametrize("values, dtype", [([0, 255], "uint8"), ([-1, 127], "int8"), ([0, 256], "uint16"),
                                           ([-129, 3], "int16"), ([0.0004, 3], "uint8"), ([0.5, 1], "float32"),
                                           ([-(2 ** 31), 0], "int32"), ([2 ** 32], "float32")])
def test_sample_dtype_is_deeploys_rule(values, dtype):
    assert deeploy_dialect.sample_dtype(np.array(values, np.float64)) == dtype


@pytest.mark.slow
def test_microllama_matmuls_all_run_on_integer_kernels():
    """Every MatMul of Deeploy's microLlama INT8 is an int8 x int8 GEMM of the deeploy target (compile_report)."""
    folder = ROOT / "Models/microLlama/INT8/microLlama8"
    matmuls = sum(n.op_type == "MatMul" for n in onnx.load(folder / "network.onnx").graph.node)
    mod = tvm_deeploy.load_onnx(folder / "network.onnx", inputs=_arrays(folder / "inputs.npz"))
    main_text = str(tvm_deeploy.partition_for_deeploy(mod)["main"])
    assert "R.matmul" not in main_text and len(re.findall(r"= \w+_deeploy\(", main_text)) == matmuls == 88
    report = tvm_deeploy.compile_report(mod, tvm_deeploy.target())
    assert {(e["op"], e["dtype"], e["engine"]) for e in report.values()} == {("gemm", "int8", "cluster")}


def test_exported_int_requant_gemm_on_host_is_offloaded(tmp_path):
    """GEMM/Batch_RQ (MatMul -> Add -> RequantShift) runs as gemm_int_requant in the exported program."""
    folder = ROOT / "Kernels/Integer/GEMM/Batch_RQ"
    samples = _arrays(folder / "inputs.npz")
    mod = tvm_deeploy.load_onnx(folder / "network.onnx", inputs=samples)
    inputs, _ = deeploy_dialect.harness_inputs(mod, samples)
    exported = tvm_deeploy.export_c(mod, tvm_deeploy.target(), tmp_path / "out", inputs=inputs,
                                    expected_outputs=_arrays(folder / "outputs.npz"))
    assert exported.report["counts"]["deeploy"] == 1
    subprocess.run(["make", "-s", "-C", str(tmp_path / "out"), "host"], check=True, capture_output=True)
    run = subprocess.run([str(tmp_path / "out" / "build" / "host" / "net_test")], capture_output=True, text=True)
    assert run.returncode == 0 and "Errors: 0 out of 16" in run.stdout


# ---------------------------------------------------------------- the README's formulas on random shapes


def _rq(x, mul, add, div, signed):
    y = np.floor((x * mul + add) / div + 0.5)
    return np.clip(y, -128, 127) if signed else np.clip(y, 0, 255)


def _layer_norm(x, weight, bias, d_scale):
    mean = np.trunc(x.mean(-1, keepdims=True))
    d = x - mean
    std = np.floor(np.sqrt(np.floor((d * d).mean(-1, keepdims=True)) + 1))
    return np.clip(np.floor((np.trunc(d * weight / std) + bias) / d_scale), -128, 127)


def _ita_max(x):
    s = np.floor((x.max(-1, keepdims=True) - x) / 32 + 0.5)
    inv = np.floor(256 * 255 / np.floor((256 / 2 ** s).sum(-1, keepdims=True)))
    return np.floor(inv / 2 ** s)


def _single_op_model(op_type, shape, constants, attrs):
    from onnx import TensorProto, helper, numpy_helper
    names = ["x", *constants]
    node = helper.make_node(op_type, names, ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              [numpy_helper.from_array(v.astype(np.float32), n) for n, v in constants.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)]).SerializeToString()


def _tensor_attr(value):
    from onnx import numpy_helper
    return numpy_helper.from_array(np.array([value], np.float32))


@settings(max_examples=6, deadline=None)
@given(rows=st.integers(1, 3), cols=st.integers(1, 24), seed=st.integers(0, 2 ** 16),
       op=st.sampled_from(["RequantShift", "iLayerNorm", "ITAMax"]))
def test_dialect_ops_follow_the_readme_formulas(rows, cols, seed, op):
    rng = np.random.default_rng(seed)
    shape = [1, rows, cols]
    if op == "RequantShift":
        x = rng.integers(-40000, 40000, shape).astype(np.float64)
        signed = int(rng.integers(0, 2))
        mul, add = rng.integers(-300, 300, (rows, 1)), rng.integers(-2 ** 20, 2 ** 20, (rows, 1))
        constants = {"mul": mul, "add": add}
        attrs = {"div": _tensor_attr(2 ** 14), "n_levels_out": _tensor_attr(256), "signed": _tensor_attr(signed)}
        expected = _rq(x, mul, add, 2 ** 14, signed)
    elif op == "iLayerNorm":
        x = rng.integers(-128, 128, shape).astype(np.float64)
        weight, bias = rng.integers(-2 ** 14, 2 ** 14, cols), rng.integers(-2 ** 18, 2 ** 18, cols)
        constants = {"weight": weight, "bias": bias}
        attrs = {"D": _tensor_attr(2 ** 14), "n_levels": _tensor_attr(256)}
        expected = _layer_norm(x, weight, bias, 2 ** 14)
    else:
        x = rng.integers(-128, 128, shape).astype(np.float64)
        constants, attrs, expected = {}, {"n_levels": _tensor_attr(256)}, _ita_max(x)
    mod = tvm_deeploy.load_onnx(_single_op_model(op, shape, constants, attrs), inputs=[x])
    inputs, _ = deeploy_dialect.harness_inputs(mod, [x])
    vm = relax.VirtualMachine(relax.build(mod, "llvm"), tvm.cpu())
    actual = vm["main"](tvm.runtime.tensor(inputs[0])).numpy()
    assert actual.dtype.kind in "iu" and np.array_equal(actual.astype(np.float64), expected)


def test_dialect_attributes_outside_the_semantics_are_one_model_error():
    model = _single_op_model("RequantShift", [1, 4], {"mul": np.ones(1), "add": np.zeros(1)},
                             {"div": _tensor_attr(1000), "n_levels": _tensor_attr(256), "signed": _tensor_attr(1)})
    with pytest.raises(tvm_deeploy.ModelError, match="at operator RequantShift: DialectError: RequantShift: "
                                                     "div = 1000 is not a power of two") as caught:
        tvm_deeploy.load_onnx(model, input_dtypes={"x": "int8"})
    assert "\n" not in str(caught.value)


def test_zero_length_input_is_an_empty_constant_that_concat_drops():
    from onnx import TensorProto, helper
    node = helper.make_node("Concat", ["cache", "x"], ["y"], axis=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("cache", TensorProto.FLOAT, [1, 0, 4]),
                                            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    mod = tvm_deeploy.load_onnx(model)
    assert [str(p.name) for p in mod["main"].params] == ["x"]
    x = np.arange(8, dtype=np.float32).reshape(1, 2, 4)
    vm = relax.VirtualMachine(relax.build(mod, "llvm"), tvm.cpu())
    assert np.array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), x)
