"""The decoder's own TIR glue (lm/llama.py): the decode mask and the layer's cache write against NumPy, and
what of TVM's glue a decode step runs (a mask once per call, one cache write per layer, no dequantize of v)."""

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from test_llama import PROMPT, TINY

from tvm_deeploy.lm.checkpoint import random_checkpoint
from tvm_deeploy.lm.llama import build_decoder, cache_write, decode_mask
from tvm_deeploy.lm.llama_reference import calibrate
from tvm_deeploy.program.glue_cores import split_by_core
from tvm_deeploy.program.lower import lower_program
from tvm_deeploy.targets.target import target


def _built(prim_func):
    return tvm.tirx.build(tvm.IRModule({"f": prim_func.with_attr("global_symbol", "f")}), target="llvm")["f"]


@pytest.fixture(scope="module")
def mask_64():
    return _built(decode_mask(64))


@pytest.mark.parametrize("position", [-3, 0, 17, 63, 90])
def test_decode_mask_hides_the_keys_after_the_position(mask_64, position):
    out = tvm.runtime.tensor(np.zeros((1, 1, 1, 64), "float32"))
    mask_64(tvm.runtime.tensor(np.array([position], "int32")), out)
    expected = np.where(np.arange(64) <= position, 0.0, -np.inf).astype("float32").reshape(1, 1, 1, 64)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_mask_and_cache_write_split_over_the_cores():
    assert split_by_core(decode_mask(64), 8) is not None
    assert split_by_core(cache_write(4, 64, 8, 1, value_scale=0.5), 8) is not None


@settings(max_examples=12, deadline=None)
@given(tokens=st.integers(1, 3), position=st.integers(-2, 6), dequantize=st.booleans(), seed=st.integers(0, 99))
def test_cache_write_writes_both_caches_at_the_clamped_rows(tokens, position, dequantize, seed):
    """Keys from their rotary pairs, values from rows; int8 values are dequantized as TVM's dequantize does
    (float32(v) * scale, bit for bit); rows outside the context go to its edge."""
    heads, context, head_dim, scale = 2, 5, 4, np.float32(0.037)
    rng = np.random.default_rng(seed)
    keys = rng.standard_normal((tokens, heads, head_dim // 2, 2)).astype("float32")
    values = rng.integers(-128, 128, (tokens, heads * head_dim)).astype("int8") if dequantize else \
        rng.standard_normal((tokens, heads * head_dim)).astype("float32")
    write = _built(cache_write(heads, context, head_dim, tokens, value_scale=float(scale) if dequantize else None))
    caches = [np.full((1, heads, context, head_dim), 9.0, "float32") for _ in range(2)]
    tensors = [tvm.runtime.tensor(a) for a in (*caches, keys, values, np.array([position], "int32"))]
    write(*tensors)
    value_rows = values.astype("float32") * scale if dequantize else values
    for t in range(tokens):
        row = min(max(position + t, 0), context - 1)
        caches[0][0, :, row] = keys[t].reshape(heads, head_dim)
        caches[1][0, :, row] = value_rows[t].reshape(heads, head_dim)
    np.testing.assert_array_equal(tensors[0].numpy(), caches[0])
    np.testing.assert_array_equal(tensors[1].numpy(), caches[1])


def test_decode_glue_is_a_mask_per_call_and_a_cache_write_per_layer():
    """The int8 decoder's decode step leaves to TVM: the rotary rows and the embedding row (take), the mask
    once, one cache write per layer (v's dequantize folded in) and the head's dequantize; nothing else."""
    checkpoint = random_checkpoint(TINY, seed=3)
    mod = build_decoder(checkpoint, len(PROMPT), calibrate(checkpoint, PROMPT))
    lowered = lower_program(mod, target(npu=False), functions=("prompt", "decode"))
    glue = [step.callee for step in lowered.programs["decode"].steps if step.kind == "tvm"]
    assert glue == ["decode_mask", "take", "take", "take1"] + \
        [f"kv_write_decode{i or ''}" for i in range(TINY.n_layers)] + ["dequantize"]
