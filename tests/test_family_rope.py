"""The rotary-embedding family: kernel against the NumPy reference (bit-exact), the pattern of the Llama
builder's form (prompt: constant cos/sin per token; decode: one run-time row), fp32 and a dequantized int8
input, and the offloaded build against TVM's llvm build (within 1e-6 relative)."""

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
@given(tokens=st.integers(1, 12), heads=st.integers(1, 6), half=st.integers(1, 16), one_row=st.booleans(),
       cores=st.integers(1, 8), x_quant=st.none() | quants, seed=st.integers(0, 2**16))
def test_kernel_is_bit_exact(lib, tokens, heads, half, one_row, cores, x_quant, seed):
    rng = np.random.default_rng(seed)
    x = quantized_input(rng, (tokens, heads, half, 2), x_quant)
    angles = rng.uniform(-np.pi, np.pi, (1 if one_row else tokens, 1, half))
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    y = np.zeros((tokens, heads, half, 2), np.float32)
    lib.dpl_rope(pointer(x), quant_pointer(x_quant), pointer(cos), pointer(sin), 0 if one_row else half,
                 pointer(y), tokens, heads, half, cores)
    assert_bits_equal(y, reference.rope(x, cos, sin, x_quant))


TOKENS, HEADS, HALF = 5, 3, 4
QUANT = reference.Quant(0.04, 1)


def _rope(int8: bool, decode: bool):
    """lm/llama.py's rotary embedding of x [tokens, heads * head_dim]: cos and sin constants per token
    (prompt) or a run-time row (decode)."""
    tokens = 1 if decode else TOKENS
    x = relax.Var("x", relax.TensorType((tokens, HEADS * HALF * 2), "int8" if int8 else "float32"))
    table = relax.TensorType((1, 1, HALF, 1), "float32")
    params = [x, relax.Var("cos", table), relax.Var("sin", table)] if decode else [x]
    angles = np.arange(tokens * HALF, dtype=np.float32).reshape(tokens, 1, HALF, 1) * np.float32(0.3)

    def body(bb, x, *factors):
        cos, sin = factors or (relax.const(np.cos(angles)), relax.const(np.sin(angles)))
        x = bb.emit(dequantize(x, QUANT)) if int8 else x
        pairs = bb.emit(relax.op.reshape(x, (tokens, HEADS, HALF, 2)))
        x0 = bb.emit(relax.op.strided_slice(pairs, axes=[3], begin=[0], end=[1]))
        x1 = bb.emit(relax.op.strided_slice(pairs, axes=[3], begin=[1], end=[2]))
        y0 = bb.emit(relax.op.subtract(bb.emit(relax.op.multiply(x0, cos)), bb.emit(relax.op.multiply(x1, sin))))
        y1 = bb.emit(relax.op.add(bb.emit(relax.op.multiply(x0, sin)), bb.emit(relax.op.multiply(x1, cos))))
        return relax.op.concat([y0, y1], axis=3)

    return function(params, body), np.cos(angles), np.sin(angles)


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("decode", [False, True])
def test_offloaded_equals_reference_and_llvm(int8, decode, rng, tmp_path):
    mod, cos, sin = _rope(int8, decode)
    assert offloaded(mod) == ["rope"]
    x = quantized_input(rng, ((1 if decode else TOKENS), HEADS * HALF * 2), QUANT if int8 else None)
    inputs = [x, cos, sin] if decode else [x]
    ours = build_and_run(mod, "deeploy", inputs, tmp_path)
    pairs = x.reshape(-1, HEADS, HALF, 2)
    assert_bits_equal(ours, reference.rope(pairs, cos[..., 0], sin[..., 0], QUANT if int8 else None))
    assert_close_f32(ours, build_and_run(mod, "llvm", inputs, tmp_path), rtol=1e-6)
