"""Property-based fuzzing of the whole path: random small Relax graphs (shapes, dtypes, masks, QDQ
parameters, ops the offload does not take) exported as standalone C, built with -Werror under ASan/UBSan
and run. Each graph either equals TVM's llvm build (fp32 within 1e-4 relative, integers exact, int8 QDQ
within 1 LSB) or is refused with one tvm_deeploy error on one line: never a crash or a raw TVM error.

Bounded for CI: few examples, derandomized (the same graphs every run)."""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_export import make, run_driver
from test_patterns import graph
from tvm import relax

import tvm_deeploy
from tvm_deeploy.frontend.onnx_import import ModelError
from tvm_deeploy.program.lower import ExportError

# What the standalone path may refuse with: its own error types, each naming what it refuses.
DEEPLOY_ERRORS = (ExportError, ModelError, ValueError)
# Largest difference from the llvm build, relative to its largest output (fp32) or in LSB (integers).
TOLERANCE = {"float32": 1e-4, "int32": 0, "int8": 1}
_LLVM_DIFF = re.compile(r"^Largest difference from TVM llvm: (\S+) \((\S+) of the largest", re.MULTILINE)


def _matmul(draw):
    m, k, n = draw(st.integers(1, 6)), draw(st.integers(1, 8)), draw(st.integers(1, 6))
    weight = relax.const(np.random.default_rng(k).standard_normal((k, n)).astype("float32"))
    bias = draw(st.booleans())
    extra = draw(st.sampled_from([None, "cumsum", "sort", "tanh"]))  # ops that stay in TVM

    def body(bb, x):
        y = bb.emit(relax.op.matmul(x, weight))
        if bias:
            y = bb.emit(relax.op.add(y, relax.const(np.ones(n, "float32"))))
        if extra == "cumsum":
            return relax.op.cumsum(y, axis=1)
        if extra == "sort":
            return relax.op.sort(y, axis=1)
        return relax.op.tanh(y) if extra == "tanh" else y
    return [((m, k), "float32")], body, "float32"


def _int_matmul(draw):
    m, k, n = draw(st.integers(1, 6)), draw(st.integers(1, 8)), draw(st.integers(1, 6))
    weight = relax.const(np.random.default_rng(n).integers(-128, 128, (k, n)).astype("int8"))
    return [((m, k), "int8")], lambda bb, x: relax.op.matmul(x, weight, out_dtype="int32"), "int32"


def _qdq(draw):
    m, k, n = draw(st.integers(1, 6)), draw(st.integers(1, 8)), draw(st.integers(1, 6))
    scales = [draw(st.sampled_from([0.02, 0.1, 0.5])) for _ in range(3)]
    broken = draw(st.sampled_from([None, None, 0.0, -0.05, float("inf")]))  # refused, naming op and value
    if broken is not None:
        scales[draw(st.integers(0, 2))] = broken
    x_scale, w_scale, out_scale = scales
    x_zp, out_zp = draw(st.integers(-8, 8)), draw(st.integers(-8, 8))
    weight = relax.const(np.random.default_rng(m).integers(-127, 128, (k, n)).astype("int8"))

    def body(bb, x):
        xq = bb.emit(relax.op.quantize(x, relax.const(x_scale, "float32"), relax.const(x_zp, "int8"), axis=-1,
                                       out_dtype="int8"))
        xd = bb.emit(relax.op.dequantize(xq, relax.const(x_scale, "float32"), relax.const(x_zp, "int8"), axis=-1))
        wd = bb.emit(relax.op.dequantize(weight, relax.const(w_scale, "float32"), relax.const(0, "int8"), axis=1))
        y = bb.emit(relax.op.matmul(xd, wd))
        return relax.op.quantize(y, relax.const(out_scale, "float32"), relax.const(out_zp, "int8"), axis=-1,
                                 out_dtype="int8")
    return [((m, k), "float32")], body, "int8"


def _attention(draw):
    q_len, kv_len, heads = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    causal = draw(st.sampled_from([None, "TopLeft", "BottomRight"]))
    mask = draw(st.booleans())
    inputs = [((1, q_len, heads, 4), "float32"), ((1, kv_len, heads, 4), "float32"),
              ((1, kv_len, heads, 4), "float32")] + ([((1, 1, q_len, kv_len), "float32")] if mask else [])

    def body(bb, q, k, v, *bias):
        return relax.op.nn.attention(q, k, v, bias[0] if bias else None, causal_mask=causal)
    return inputs, body, "float32"


KINDS = {"matmul": _matmul, "int_matmul": _int_matmul, "qdq": _qdq, "attention": _attention}


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_graph_matches_llvm_or_is_refused_in_one_line(kind, data, tmp_path_factory):
    case = data.draw(st.composite(KINDS[kind])())
    inputs, body, out_dtype = case
    folder = tmp_path_factory.mktemp("fuzz") / "p"
    try:
        tvm_deeploy.export_c(graph(inputs, body), tvm_deeploy.target(), folder)
    except DEEPLOY_ERRORS as err:
        assert str(err) and "\n" not in str(err), repr(err)
        assert "InternalError" not in str(err), str(err)
        return
    code, output = run_driver(make(folder, "host-asan"))
    assert code == 0 and "Errors: 0 out of" in output, output
    absolute, relative = (float(v) for v in _LLVM_DIFF.search(output).groups())
    assert (relative if out_dtype == "float32" else absolute) <= TOLERANCE[out_dtype], output
