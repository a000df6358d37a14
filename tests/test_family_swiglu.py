"""The SwiGLU family: kernel bit-exact against the NumPy reference (dpl_expf is reference.expf; an int8 gate
through reference.silu_table), the patterns of the Llama builder's fp32 and int8 QDQ forms, and the offloaded
build against TVM's llvm build (its exp against dpl_expf: fp32 within 1e-6 relative, int8 within 1 LSB)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close_f32, build_and_run, offloaded
from family_kernels import (
    assert_bits_equal,
    dequantize,
    function,
    kernel_library,
    pointer,
    quant_pointer,
    quantize,
    quantized_input,
    quants,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax

from tvm_deeploy.offload import reference


@pytest.fixture(scope="module")
def lib(build_dir):
    return kernel_library(build_dir)


def _assert_close(actual, expected):
    """Against TVM's exp: int8 within 1 LSB (an ulp of exp can cross a rounding boundary), fp32 within 1e-6
    relative."""
    if expected.dtype == np.int8:
        assert np.abs(actual.astype(np.int32) - expected).max(initial=0) <= 1
    else:
        assert_close_f32(actual, expected, rtol=1e-6)


@settings(max_examples=30)
@given(n=st.integers(1, 400), cores=st.integers(1, 8), a_quant=st.none() | quants, b_quant=st.none() | quants,
       y_quant=st.none() | quants, seed=st.integers(0, 2**16))
def test_kernel_matches_reference(lib, n, cores, a_quant, b_quant, y_quant, seed):
    rng = np.random.default_rng(seed)
    a = quantized_input(rng, n, a_quant, scale=4.0)
    b = quantized_input(rng, n, b_quant)
    y = np.zeros(n, np.float32 if y_quant is None else np.int8)
    silu = None if a_quant is None else reference.silu_table(a_quant)
    lib.dpl_swiglu(pointer(a), pointer(silu), pointer(b), quant_pointer(b_quant), pointer(y), quant_pointer(y_quant),
                   n, cores)
    assert_bits_equal(y, reference.swiglu(a, b, a_quant, b_quant, y_quant))


def test_kernel_at_the_ends_of_exp(lib):
    """Gates where dpl_expf leaves its main range (overflow, subnormal results, underflow): still bit-exact."""
    a = np.array([-200.0, -104.5, -100.0, -88.5, -87.0, -86.9, 0.0, -0.0, 86.9, 87.0, 88.5, 100.0, 200.0, np.inf,
                  3e38, -3e38], np.float32)
    b = np.linspace(-2.0, 2.0, a.size, dtype=np.float32)
    y = np.zeros(a.size, np.float32)
    lib.dpl_swiglu(pointer(a), None, pointer(b), None, pointer(y), None, a.size, 1)
    assert_bits_equal(y, reference.swiglu(a, b))


A, B, Y = reference.Quant(0.05, 0), reference.Quant(0.03, 2), reference.Quant(0.02, -1)


def _swiglu(int8: bool):
    """silu(a) * b as lm/llama.py writes it; int8: the QDQ form between int8 linear layers."""
    dtype = "int8" if int8 else "float32"
    a = relax.Var("a", relax.TensorType((3, 40), dtype))
    b = relax.Var("b", relax.TensorType((3, 40), dtype))

    def body(bb, a, b):
        if not int8:
            return relax.op.multiply(bb.emit(relax.op.nn.silu(a)), b)
        gate = bb.emit(relax.op.nn.silu(bb.emit(dequantize(a, A))))
        return quantize(bb.emit(relax.op.multiply(gate, bb.emit(dequantize(b, B)))), Y)

    return function([a, b], body)


@pytest.mark.parametrize("int8,pattern", [(False, "swiglu"), (True, "swiglu_quantize")])
def test_offloaded_matches_reference_and_llvm(int8, pattern, rng, tmp_path):
    mod = _swiglu(int8)
    assert offloaded(mod) == [pattern]
    a = quantized_input(rng, (3, 40), A if int8 else None, scale=4.0)
    b = quantized_input(rng, (3, 40), B if int8 else None)
    ours = build_and_run(mod, "deeploy", [a, b], tmp_path)
    assert_bits_equal(ours, reference.swiglu(a, b, *((A, B, Y) if int8 else (None, None, None))))
    _assert_close(ours, build_and_run(mod, "llvm", [a, b], tmp_path))


def test_broadcasting_stays_in_tvm():
    a = relax.Var("a", relax.TensorType((3, 40), "float32"))
    b = relax.Var("b", relax.TensorType((1, 40), "float32"))
    assert offloaded(function([a, b], lambda bb, a, b: relax.op.multiply(bb.emit(relax.op.nn.silu(a)), b))) == []
