"""What is offloaded and what stays in TVM, and that both run correctly."""

import numpy as np
import pytest
import tvm
from conftest import assert_close_f32, build_and_run, offloaded
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax

import tvm_deeploy


def graph(inputs, body):
    """A module `main(*inputs)` whose dataflow block is built by `body(bb, *vars)`."""
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(shape, dtype)) for i, (shape, dtype) in enumerate(inputs)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *params))
        bb.emit_func_output(out)
    return bb.get()


def random_inputs(rng, inputs):
    arrays = []
    for shape, dtype in inputs:
        if dtype.startswith("int"):
            arrays.append(rng.integers(-128, 128, shape).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


W = np.random.default_rng(7).standard_normal((8, 5)).astype("float32")

CASES = {
    "matmul 2-D constant weight": ([((4, 8), "float32")], lambda bb, x: relax.op.matmul(x, relax.const(W)),
                                   ["matmul"]),
    "matmul of activations": ([((4, 8), "float32"), ((8, 5), "float32")], relax.op.matmul and
                              (lambda bb, x, y: relax.op.matmul(x, y)), ["matmul"]),
    "batched, shared weight": ([((2, 3, 4, 8), "float32")], lambda bb, x: relax.op.matmul(x, relax.const(W)),
                               ["matmul"]),
    "batched both sides": ([((2, 4, 8), "float32"), ((2, 8, 5), "float32")],
                           lambda bb, x, y: relax.op.matmul(x, y), ["matmul"]),
    "broadcast batch": ([((1, 4, 8), "float32"), ((3, 8, 5), "float32")],
                        lambda bb, x, y: relax.op.matmul(x, y), ["matmul"]),
    "transposed weight": ([((4, 8), "float32")],
                          lambda bb, x: relax.op.matmul(x, bb.emit(relax.op.permute_dims(relax.const(W.T.copy())))),
                          ["matmul"]),
    "gemm with bias": ([((4, 8), "float32"), ((5,), "float32")],
                       lambda bb, x, b: relax.op.add(bb.emit(relax.op.matmul(x, relax.const(W))), b), ["gemm"]),
    "gemm bias first": ([((4, 8), "float32")],
                        lambda bb, x: relax.op.add(relax.const(np.ones((1, 5), "float32")),
                                                   bb.emit(relax.op.matmul(x, relax.const(W)))), ["gemm"]),
    "full-matrix add is a residual, no bias": ([((4, 8), "float32"), ((4, 5), "float32")],
                                               lambda bb, x, b: relax.op.add(bb.emit(relax.op.matmul(
                                                   x, relax.const(W))), b), ["matmul", "residual_add"]),
    "int8 x int8 -> int32": ([((4, 8), "int8"), ((8, 5), "int8")],
                             lambda bb, x, y: relax.op.matmul(x, y, out_dtype="int32"), ["matmul"]),
    "int8 gemm int32 bias": ([((4, 8), "int8"), ((8, 5), "int8")],
                             lambda bb, x, y: relax.op.add(bb.emit(relax.op.matmul(x, y, out_dtype="int32")),
                                                           relax.const(np.arange(5, dtype="int32"))), ["gemm"]),
    "softmax last axis": ([((3, 7), "float32")], lambda bb, x: relax.op.nn.softmax(x, axis=-1), ["softmax"]),
    "softmax other axis stays": ([((3, 7), "float32")], lambda bb, x: relax.op.nn.softmax(x, axis=0), []),
    "float64 stays": ([((4, 8), "float64"), ((8, 5), "float64")], lambda bb, x, y: relax.op.matmul(x, y), []),
    "int32 matmul stays": ([((4, 8), "int32"), ((8, 5), "int32")], lambda bb, x, y: relax.op.matmul(x, y), []),
    "vector operand stays": ([((8,), "float32"), ((8, 5), "float32")], lambda bb, x, y: relax.op.matmul(x, y), []),
    "conv2d stays": ([((1, 3, 8, 8), "float32")],
                     lambda bb, x: relax.op.nn.conv2d(x, relax.const(np.ones((4, 3, 3, 3), "float32"))), []),
    "layer norm stays": ([((4, 8), "float32")],
                         lambda bb, x: relax.op.nn.layer_norm(x, relax.const(np.ones(8, "float32")),
                                                              relax.const(np.zeros(8, "float32")), axes=[-1]), []),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_offload_decision_and_result(name, tmp_path, rng):
    inputs, body, expected = CASES[name]
    mod = graph(inputs, body)
    assert offloaded(mod) == expected
    arrays = random_inputs(rng, inputs)
    ours = build_and_run(mod, "deeploy", arrays, tmp_path)
    reference = build_and_run(mod, "llvm", arrays, tmp_path)
    if ours.dtype.kind == "f":
        assert_close_f32(ours, reference)
    else:
        np.testing.assert_array_equal(ours, reference)


def test_float16_stays_in_tvm_and_runs(tmp_path, rng):
    """TVM's C glue computes it through float32 (program/half.py); its build needs EXPORT_OPTIONS."""
    mod = graph([((4, 8), "float16"), ((8, 5), "float16")], lambda bb, x, y: relax.op.matmul(x, y))
    assert offloaded(mod) == []
    x, y = (rng.standard_normal(shape).astype("float16") for shape in ((4, 8), (8, 5)))
    ours = build_and_run(mod, "deeploy", [x, y], tmp_path, options=tvm_deeploy.EXPORT_OPTIONS)
    assert ours.dtype == np.float16
    np.testing.assert_array_equal(ours, (x.astype("float32") @ y.astype("float32")).astype("float16"))


def test_symbolic_shape_stays_in_tvm_and_runs(tmp_path, rng):
    n = tvm.tirx.Var("n", "int64")
    mod = graph([((n, 8), "float32")], lambda bb, x: relax.op.matmul(x, relax.const(W)))
    assert offloaded(mod) == []
    x = rng.standard_normal((3, 8)).astype("float32")
    assert_close_f32(build_and_run(mod, "deeploy", [x], tmp_path), x @ W)


def test_intermediate_used_outside_is_not_swallowed(tmp_path, rng):
    """A matmul whose result is also returned on its own must not be fused into a GEMM."""
    def body(bb, x, b):
        y = bb.emit(relax.op.matmul(x, relax.const(W)))
        return relax.Tuple([y, bb.emit(relax.op.add(y, b))])
    mod = graph([((4, 8), "float32"), ((5,), "float32")], body)
    assert offloaded(mod) == ["matmul"]
    arrays = random_inputs(rng, [((4, 8), "float32"), ((5,), "float32")])
    for ours, ref in zip(build_and_run(mod, "deeploy", arrays, tmp_path), build_and_run(mod, "llvm", arrays, tmp_path)):
        assert_close_f32(ours, ref)


@settings(max_examples=6, deadline=None)
@given(batch=st.lists(st.integers(1, 3), max_size=2), m=st.integers(1, 17), n=st.integers(1, 17),
       k=st.integers(1, 40), transposed=st.booleans(), bias=st.booleans(), dtype=st.sampled_from(["float32", "int8"]))
def test_gemm_shapes_property(tmp_path_factory, batch, m, n, k, transposed, bias, dtype):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    b_shape = (n, k) if transposed else (k, n)
    out_dtype = "int32" if dtype == "int8" else "float32"
    bias_value = (rng.integers(-1000, 1000, n) if dtype == "int8" else rng.standard_normal(n)).astype(out_dtype)

    def body(bb, a, w):
        w = bb.emit(relax.op.permute_dims(w)) if transposed else w
        y = relax.op.matmul(a, w, out_dtype=out_dtype if dtype == "int8" else None)
        return relax.op.add(bb.emit(y), relax.const(bias_value)) if bias else y

    inputs = [(tuple(batch) + (m, k), dtype), (b_shape, dtype)]
    mod = graph(inputs, body)
    assert offloaded(mod) == ["gemm" if bias else "matmul"]
    arrays = random_inputs(rng, inputs)
    tmp = tmp_path_factory.mktemp("gemm")
    ours, ref = build_and_run(mod, "deeploy", arrays, tmp), build_and_run(mod, "llvm", arrays, tmp)
    if dtype == "int8":
        np.testing.assert_array_equal(ours, ref)
    else:
        assert_close_f32(ours, ref)
