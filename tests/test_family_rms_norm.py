"""The RMSNorm family: kernel against the NumPy reference (bit-exact, float and int8 output), the patterns on
Relax graphs, and the offloaded build against TVM's llvm build (fp32 within 1e-6 relative, int8 within 1 LSB)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from conftest import KERNEL_DIR, assert_close_f32, build_and_run, offloaded, run_c_program
from family_kernels import (
    assert_bits_equal,
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

EPS = 1e-5


@pytest.fixture(scope="module")
def lib(build_dir):
    return kernel_library(build_dir)


@settings(max_examples=30)
@given(rows=st.integers(1, 24), cols=st.integers(1, 96), cores=st.integers(1, 8), y_quant=st.none() | quants,
       seed=st.integers(0, 2**16))
def test_kernel_is_bit_exact(lib, rows, cols, cores, y_quant, seed):
    rng = np.random.default_rng(seed)
    x = quantized_input(rng, (rows, cols), None, scale=3.0)
    weight = quantized_input(rng, cols, None)
    y = np.zeros((rows, cols), np.float32 if y_quant is None else np.int8)
    lib.dpl_rms_norm(pointer(x), pointer(weight), pointer(y), quant_pointer(y_quant), rows, cols,
                     ctypes.c_float(EPS), cores)
    assert_bits_equal(y, reference.rms_norm(x, weight, EPS, y_quant))




QUANT = reference.Quant(0.02, -3)
WEIGHT = np.random.default_rng(7).uniform(0.5, 1.5, 48).astype(np.float32)


def _norm(quantized: bool, axes=(-1,)):
    x = relax.Var("x", relax.TensorType((2, 6, 48), "float32"))

    def body(bb, x):
        y = relax.op.nn.rms_norm(x, relax.const(WEIGHT), axes=list(axes), epsilon=EPS)
        return quantize(bb.emit(y), QUANT) if quantized else y

    return function([x], body)


@pytest.mark.parametrize("quantized,pattern", [(False, "rms_norm"), (True, "rms_norm_quantize")])
def test_offloaded_equals_reference_and_llvm(quantized, pattern, rng, tmp_path):
    mod = _norm(quantized)
    assert offloaded(mod) == [pattern]
    x = quantized_input(rng, (2, 6, 48), None, scale=2.0)
    ours = build_and_run(mod, "deeploy", [x], tmp_path)
    assert_bits_equal(ours, reference.rms_norm(x, WEIGHT, EPS, QUANT if quantized else None))
    llvm = build_and_run(mod, "llvm", [x], tmp_path)
    if quantized:
        assert np.abs(ours.astype(np.int32) - llvm).max() <= 1
    else:
        assert_close_f32(ours, llvm, rtol=1e-6)


def test_a_norm_over_two_axes_stays_in_tvm():
    x = relax.Var("x", relax.TensorType((6, 8), "float32"))
    weight = relax.const(np.ones((6, 8), "float32"))
    assert offloaded(function([x], lambda bb, x: relax.op.nn.rms_norm(x, weight, axes=[0, 1]))) == []


def test_kernel_quantize_rounds_like_tvm(tmp_path):
    """dpl_quantize_with (the int8 output of dpl_rms_norm and dpl_swiglu) rounds halves to even without libm,
    like TVM's quantize, and saturates."""
    values = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997, 126.5, 127.5, -128.5, -129.5, 3e38, -3e38,
                       1e6, 0.0, -0.0], np.float32)
    program = "\n".join([
        '#include <stdio.h>', '#include "dpl_kernels.h"', "int main(void) {",
        f"  static const float x[{len(values)}] = {{{', '.join(f'{v!r}f' for v in values.tolist())}}};",
        "  const dpl_quant_t q[2] = {{1.0f, 0}, {0.5f, 3}};", "  int i, j;",
        f"  for (j = 0; j < 2; ++j) for (i = 0; i < {len(values)}; ++i)",
        "    printf(\"%d\\n\", dpl_quantize_with(x[i], dpl_quantizer(&q[j])));",
        "  return 0;", "}"])
    printed = [int(v) for v in run_c_program(tmp_path, "quantize", program, "-I", KERNEL_DIR, "-lm").split()]
    expected = [reference.quantize_s8(values, q) for q in (reference.Quant(1.0, 0), reference.Quant(0.5, 3))]
    assert printed == np.concatenate(expected).tolist()
