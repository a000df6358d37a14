"""The Llama decoder: the Relax module (TVM llvm and deeploy builds in TVM's VM) against the NumPy
reference, fp32 and int8, prompt and decode with the KV cache."""

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_deeploy import models
from tvm_deeploy.lm.checkpoint import LlamaConfig, random_checkpoint, save_checkpoint
from tvm_deeploy.lm.llama import build_decoder
from tvm_deeploy.lm.llama_reference import LlamaReference, calibrate
from tvm_deeploy.lm.quantize import quantize_activation, quantize_weight
from tvm_deeploy.program.export import load_in_vm
from tvm_deeploy.program.generate import generate_in_vm

TINY = LlamaConfig(dim=16, hidden_dim=40, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=48, seq_len=24)
PROMPT = [1, 7, 30, 2, 11, 5]


@pytest.fixture(scope="module")
def tiny():
    checkpoint = random_checkpoint(TINY, seed=3)
    return checkpoint, calibrate(checkpoint, PROMPT)


def _logits_in_vm(vm, config, steps, kv_cache="float32"):
    """Logits of the prompt call and of decode calls for the given tokens."""
    shape = (1, config.n_kv_heads, config.seq_len, config.head_dim)
    caches = [tvm.runtime.tensor(np.zeros(shape, kv_cache)) for _ in range(2 * config.n_layers)]
    out = [vm["prompt"](tvm.runtime.tensor(np.array(PROMPT, "int32")), *caches)[0].numpy()[0]]
    for i, token in enumerate(steps):
        position = tvm.runtime.tensor(np.array([len(PROMPT) + i], "int32"))
        out.append(vm["decode"](tvm.runtime.tensor(np.array([token], "int32")), position, *caches)[0].numpy()[0])
    return out


def _reference_logits(checkpoint, quant, steps, kv_cache="float32"):
    model = LlamaReference(checkpoint, quant, kv_cache)
    return [model.prompt(PROMPT)] + [model.decode(t) for t in steps]


@pytest.mark.parametrize("quantized", [False, True])
@pytest.mark.parametrize("target", ["llvm", "deeploy"])
def test_logits_match_reference(tiny, quantized, target):
    checkpoint, quant = tiny
    quant = quant if quantized else None
    vm = load_in_vm(build_decoder(checkpoint, len(PROMPT), quant), target)
    steps = [3, 40, 17]
    ours = _logits_in_vm(vm, TINY, steps)
    expected = _reference_logits(checkpoint, quant, steps)
    for got, want in zip(ours, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("quantized", [False, True])
def test_greedy_tokens_match_reference(tiny, quantized):
    checkpoint, quant = tiny
    quant = quant if quantized else None
    n = TINY.seq_len - len(PROMPT)  # up to the end of the context
    tokens = generate_in_vm(build_decoder(checkpoint, len(PROMPT), quant), PROMPT, n, "deeploy")
    assert tokens == LlamaReference(checkpoint, quant).generate(PROMPT, n)


def test_int8_kv_cache_matches_reference(tiny):
    """kv_cache="int8": the cache holds int8 keys and values (a quarter of the bytes); decode's logits in TVM's
    VM (deeploy build) equal the reference's with the same int8-cache semantics, which differ from the
    float32 cache's."""
    checkpoint, quant = tiny
    mod = build_decoder(checkpoint, len(PROMPT), quant, kv_cache="int8")
    caches = [p for p in mod["decode"].params if "_cache_" in p.name]
    assert [p.ty.dtype for p in caches] == ["int8"] * 2 * TINY.n_layers
    steps = [3, 40, 17]
    ours = _logits_in_vm(load_in_vm(mod, "deeploy"), TINY, steps, "int8")
    expected = _reference_logits(checkpoint, quant, steps, "int8")
    float_cache = _reference_logits(checkpoint, quant, steps)
    for got, want, other in zip(ours, expected, float_cache):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    assert not np.allclose(expected[-1], float_cache[-1], rtol=0, atol=2e-5 * np.abs(float_cache[-1]).max())


@pytest.mark.parametrize("kv_cache, quantized, message", [
    ("int4", True, "kv_cache must be one of float32, int8, got 'int4'"),
    ("int8", False, "kv_cache='int8' needs the int8 model's KV-cache scales"),
])
def test_kv_cache_type_is_checked(tiny, kv_cache, quantized, message):
    checkpoint, quant = tiny
    with pytest.raises(ValueError, match=message):
        models.llama_decoder(checkpoint, len(PROMPT), quant if quantized else None, kv_cache=kv_cache)


def test_int8_offload_logits_near_tvms_float_qdq(tiny):
    """The offloaded int8 layers (integer-only) against TVM's float-defined QDQ build of the same graph."""
    checkpoint, quant = tiny
    mod = build_decoder(checkpoint, len(PROMPT), quant)
    ours = _logits_in_vm(load_in_vm(mod, "deeploy"), TINY, [9])
    theirs = _logits_in_vm(load_in_vm(mod, "llvm"), TINY, [9])
    # Only the attention's float sums differ (our kernel vs TVM's): int8 layers then agree exactly or
    # a quantize step flips by one LSB.
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=0, atol=0.05 * np.abs(b).max())


def test_module_from_checkpoint_file(tmp_path, tiny):
    checkpoint, _ = tiny
    path = tmp_path / "tiny.bin"
    save_checkpoint(path, checkpoint)
    mod = models.llama_decoder(path, 4)
    names = sorted(gv.name_hint for gv in mod.get_global_vars())
    assert names == ["decode", "decode_mask", "kv_write_decode", "kv_write_prompt", "prompt"]
    params = [p.name for p in mod["decode"].params]
    assert params == ["token", "position", "k_cache_0", "v_cache_0", "k_cache_1", "v_cache_1"]
    assert [int(d) for d in mod["prompt"].params[0].ty.shape] == [4]


def test_offloads_every_linear_layer_attention_and_element_wise_op(tiny):
    """No matmul, softmax, norm, SiLU or residual add stays in TVM; identical ops (each layer's attention,
    the head of both functions) share one offloaded function."""
    checkpoint, quant = tiny
    from tvm_deeploy.offload.partition import partition_for_deeploy
    from tvm_deeploy.plan.report import compile_report

    mod = build_decoder(checkpoint, len(PROMPT), quant)
    partitioned = partition_for_deeploy(mod)
    for name in ("prompt", "decode"):
        ops, calls = set(), 0

        def visit(expr):
            nonlocal calls
            if isinstance(expr, tvm.relax.Call) and isinstance(expr.op, tvm.ir.Op):
                ops.add(expr.op.name)
            elif isinstance(expr, tvm.relax.Call) and expr.op.name_hint.endswith("_deeploy"):
                calls += 1

        tvm.relax.analysis.post_order_visit(partitioned[name].body, visit)
        assert not ops & {"relax.matmul", "relax.nn.softmax", "relax.nn.rms_norm", "relax.nn.silu", "relax.add",
                          "relax.quantize"}
        # per layer 7 linear layers, the attention and its output's quantize, 2 norms, 2 rotary embeddings,
        # SwiGLU, 2 residual adds; the final norm and the head
        assert calls == TINY.n_layers * 16 + 2
    # the prompt's attention reads the v projection's int8 output (its dequantize folded in): one function per
    # layer, as each has its own scale
    summaries = sorted(entry["summary"] for entry in compile_report(mod, "deeploy").values())
    assert [s for s in summaries if s.startswith("attention")] == [
        "attention float32 batch=1 heads=4/2 q=1 kv=24 d=4/4 causal=none"] + [
        "attention float32 batch=1 heads=4/2 q=6 kv=6 d=4/4 causal=top_left int8 v"] * TINY.n_layers


@pytest.mark.parametrize("prompt_len", [0, TINY.seq_len])
def test_prompt_length_must_fit_the_context(tiny, prompt_len):
    with pytest.raises(ValueError, match=f"prompt_len {prompt_len} must be in 1..{TINY.seq_len - 1}"):
        build_decoder(tiny[0], prompt_len)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_weight_quantization_per_output_channel(out_features, in_features, seed):
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((out_features, in_features)) * rng.uniform(0.01, 3)).astype(np.float32)
    q, scale = quantize_weight(weight)
    assert q.shape == (in_features, out_features) and q.dtype == np.int8
    assert np.abs(q).max(axis=0).tolist() == [127] * out_features  # every channel uses its full range
    assert (np.abs(weight.T - q * scale) <= scale * 0.5 * (1 + 1e-6)).all()


def test_activation_quantization_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, 200.0, -300.0], np.float32)
    assert quantize_activation(x, 1.0).tolist() == [0, 2, 2, 0, 127, -128]
