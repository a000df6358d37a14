"""The quantize family: kernel against the NumPy reference (bit-exact), the pattern (only a quantize that no
kernel before it folded in), and the offloaded build against TVM's llvm build (within 1 LSB)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_and_run, offloaded
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


@pytest.fixture(scope="module")
def lib(build_dir):
    return kernel_library(build_dir)


@settings(max_examples=30)
@given(n=st.integers(1, 300), cores=st.integers(1, 8), quant=quants, seed=st.integers(0, 2**16))
def test_kernel_is_bit_exact(lib, n, cores, quant, seed):
    rng = np.random.default_rng(seed)
    x = quantized_input(rng, n, None, scale=3.0)
    x[: n // 4] = np.round(x[: n // 4] / np.float32(quant.scale) * 2) / 2 * np.float32(quant.scale)  # near ties
    y = np.zeros(n, np.int8)
    lib.dpl_quantize(pointer(x), quant_pointer(quant), pointer(y), n, cores)
    assert_bits_equal(y, reference.quantize_s8(x, quant))


QUANT = reference.Quant(0.03, -2)


def test_offloaded_equals_reference_and_llvm(rng, tmp_path):
    x = relax.Var("x", relax.TensorType((4, 33), "float32"))
    mod = function([x], lambda bb, x: quantize(x, QUANT))
    assert offloaded(mod) == ["quantize"]
    values = quantized_input(rng, (4, 33), None, scale=2.0)
    ours = build_and_run(mod, "deeploy", [values], tmp_path)
    assert_bits_equal(ours, reference.quantize_s8(values, QUANT))
    assert np.abs(ours.astype(np.int32) - build_and_run(mod, "llvm", [values], tmp_path)).max() <= 1


def test_per_channel_quantize_stays_in_tvm():
    x = relax.Var("x", relax.TensorType((4, 3), "float32"))
    scales, zeros = relax.const(np.array([0.1, 0.2, 0.3], "float32")), relax.const(np.zeros(3, "int8"))
    mod = function([x], lambda bb, x: relax.op.quantize(x, scales, zeros, axis=1, out_dtype="int8"))
    assert offloaded(mod) == []
