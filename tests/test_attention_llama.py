"""Llama attention in prompt and KV-cache decode form, fp32 and int8 QDQ, grouped-query attention, on the
shapes of microLlama (16 heads of 4) and llama2.c's stories260K (8 heads over 4 K/V heads of 8), and a
512-token prompt tiled into a 64 KiB L1: one fused kernel each; int8 bit-exact against
reference.attention_s8 and within 2 LSB of TVM's float build, fp32 within 1e-5 of TVM's llvm build."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from conftest import assert_close_f32, offloaded
from tvm import relax

import tvm_deeploy
from tvm_deeploy import models
from tvm_deeploy.offload import reference
from tvm_deeploy.targets.platforms import KIB

MICRO_LLAMA = dict(heads=16, kv_heads=16, head_dim=4)
STORIES_260K = dict(heads=8, kv_heads=4, head_dim=8)
SCALES, ZERO_POINTS = (0.08, 0.08, 0.03, 0.02), (2, -3, 1, -4)


def layer_inputs(rng, heads, kv_heads, head_dim, tokens, cache, quantized, position=None):
    def make(*shape):
        if quantized:
            return rng.integers(-128, 128, shape).astype("int8")
        return rng.standard_normal(shape).astype("float32")

    arrays = [make(1, tokens, heads * head_dim), make(1, tokens, kv_heads * head_dim),
              make(1, tokens, kv_heads * head_dim)]
    if cache:
        arrays += [make(1, kv_heads, cache, head_dim), make(1, kv_heads, cache, head_dim)]
    if position is not None:
        arrays.append(np.array([position], "int32"))
    return arrays


def expected_s8(arrays, heads, kv_heads, head_dim, tokens, cache, gqa="broadcast"):
    """reference.attention_s8 on the layer's int8 inputs, the constants derived from the graph's scales."""
    def heads_first(x, n):
        return x.reshape(1, tokens, n, head_dim).transpose(0, 2, 1, 3)

    q, k, v = heads_first(arrays[0], heads), heads_first(arrays[1], kv_heads), heads_first(arrays[2], kv_heads)
    if cache:
        k, v = np.concatenate([arrays[3], k], axis=2), np.concatenate([arrays[4], v], axis=2)
    scale = float(np.float32(1.0 / np.sqrt(head_dim)))  # the graph's float32 constant
    quant = reference.attention_quant(*SCALES, *ZERO_POINTS, scale, k.shape[2])
    causal = "bottom_right" if tokens > 1 else "none"
    kv_div = 1 if gqa == "tile" else heads // kv_heads
    out = reference.attention_s8(q, k, v, quant, causal, kv_heads, kv_div)
    return out.transpose(0, 2, 1, 3).reshape(1, tokens, heads * head_dim)


def _vm(mod, target, tmp_path, name):
    ex = tvm.relax.build(mod, target=target)
    path = tmp_path / f"{name}.so"
    ex.export_library(str(path))
    return relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())


def _run(vm, arrays):
    out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in arrays])
    return [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]


def check(mod, input_sets, tmp_path, target="deeploy", expected=None):
    """Build for `target` and llvm once, run every input set: int8 output bit-exact against
    `expected` (one array per input set) and within 2 LSB of TVM, fp32 within 1e-5 of TVM; other
    outputs (the caches TVM updates) equal."""
    ours_vm, llvm_vm = _vm(mod, target, tmp_path, "deeploy"), _vm(mod, "llvm", tmp_path, "llvm")
    for n, arrays in enumerate(input_sets):
        for i, (a, b) in enumerate(zip(_run(ours_vm, arrays), _run(llvm_vm, arrays))):
            if i > 0:
                np.testing.assert_array_equal(a, b)  # the caches TVM concatenated or updated
            elif a.dtype == np.int8:
                if expected is not None:
                    np.testing.assert_array_equal(a, expected[n])
                diff = np.abs(a.astype(np.int32) - b)
                assert diff.max() <= 2, f"int8 attention {diff.max()} LSB from TVM's float build"
            else:
                assert_close_f32(a, b)


CASES = {
    # name: (model, tokens, cache, quantized, extra attention_layer options)
    "microLlama prompt 64": (MICRO_LLAMA, 64, 0, False, {}),
    "microLlama prompt 64 int8": (MICRO_LLAMA, 64, 0, True, {}),
    "microLlama decode L=1 int8": (MICRO_LLAMA, 1, 0, True, {}),
    "microLlama decode L=2": (MICRO_LLAMA, 1, 1, False, {}),
    "microLlama decode L=129 int8": (MICRO_LLAMA, 1, 128, True, {}),
    "microLlama decode L=256": (MICRO_LLAMA, 1, 255, False, {}),
    "microLlama decode L=256 int8": (MICRO_LLAMA, 1, 255, True, {}),
    "stories260K prompt 64": (STORIES_260K, 64, 0, False, {}),
    "stories260K prompt 64 int8": (STORIES_260K, 64, 0, True, {}),
    "stories260K decode L=100 int8": (STORIES_260K, 1, 99, True, {}),
    "stories260K decode L=512": (STORIES_260K, 1, 511, False, {}),
    "stories260K decode L=512 int8": (STORIES_260K, 1, 511, True, {}),
    "stories260K 3 new tokens, cache 20, int8": (STORIES_260K, 3, 20, True, {}),
    "GQA repeat int8": (STORIES_260K, 16, 0, True, {"gqa": "repeat"}),
    "GQA tile (head h reads h % kv_heads)": (STORIES_260K, 16, 0, False, {"gqa": "tile"}),
    "GQA tile int8": (STORIES_260K, 1, 40, True, {"gqa": "tile"}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_llama_attention(name, tmp_path):
    model, tokens, cache, quantized, options = CASES[name]
    mod = models.attention_layer(**model, tokens=tokens, cache=cache, quantized=quantized, **options)
    assert offloaded(mod) == ["attention_chain_s8" if quantized else "attention_chain"]
    (entry,) = tvm_deeploy.compile_report(mod).values()
    assert entry["summary"].startswith(f"attention {'int8' if quantized else 'float32'} batch=1 "
                                       f"heads={model['heads']}/{model['kv_heads']} q={tokens} kv={tokens + cache}")
    rng = np.random.default_rng(sorted(CASES).index(name))
    arrays = layer_inputs(rng, **model, tokens=tokens, cache=cache, quantized=quantized)
    expected = [expected_s8(arrays, **model, tokens=tokens, cache=cache, **options)] if quantized else None
    check(mod, [arrays], tmp_path, expected=expected)


def test_fixed_size_cache_with_position(tmp_path):
    """Decode into a fixed-size cache: TVM writes the new K/V at the position and computes the mask
    from it; the attention (with that mask as an operand) is the fused kernel."""
    mod = models.attention_layer(**STORIES_260K, tokens=1, cache=64, cache_form="position")
    assert offloaded(mod) == ["attention_chain"]
    rng = np.random.default_rng(64)
    check(mod, [layer_inputs(rng, **STORIES_260K, tokens=1, cache=64, quantized=False, position=position)
                for position in (0, 37, 63)], tmp_path)


@pytest.mark.parametrize("quantized", [False, True], ids=["fp32", "int8"])
def test_512_token_prompt_in_64_kib_of_l1(quantized, tmp_path):
    """The 512 x 512 scores (1 MiB in fp32) never exist: key blocks stream through a 64 KiB L1."""
    model = dict(heads=2, kv_heads=2, head_dim=16)
    mod = models.attention_layer(**model, tokens=512, quantized=quantized)
    target = tvm_deeploy.target(l1_bytes=64 * KIB)
    (entry,) = tvm_deeploy.compile_report(mod, target).values()
    assert "q=512 kv=512" in entry["summary"] and "causal=top_left" in entry["summary"]
    assert entry["l1_bytes"] <= 64 * KIB and entry["tiles"] > 1 and entry["tile"][2] < 512
    assert entry["dma_in_bytes"] + entry["dma_out_bytes"] >= entry["dma_lower_bound"]
    rng = np.random.default_rng(512)
    arrays = layer_inputs(rng, **model, tokens=512, cache=0, quantized=quantized)
    expected = [expected_s8(arrays, **model, tokens=512, cache=0)] if quantized else None
    check(mod, [arrays], tmp_path, target=target, expected=expected)


def test_report_and_exported_project_show_the_attention_tiling(tmp_path):
    """compile_report and the standalone project's report.json carry the attention's tiles, L1 bytes and
    DMA against the lower bound; its scratch lives in the L1 arena (no static buffers of its own)."""
    mod = models.attention_layer(**STORIES_260K, tokens=64, quantized=True)
    target = tvm_deeploy.target(l1_bytes=16 * KIB)
    (entry,) = tvm_deeploy.compile_report(mod, target).values()
    assert entry["op"] == "attention" and entry["dtype"] == "int8" and entry["engine"] == "cluster"
    assert len(entry["tile"]) == 3 and entry["tile_axes"] == ["heads", "queries", "keys"]
    assert entry["tiles"] >= 1 and entry["steps"] >= entry["tiles"] and entry["cores"] == 8
    assert 0 < entry["l1_bytes"] <= 16 * KIB
    assert entry["dma_in_bytes"] + entry["dma_out_bytes"] >= entry["dma_lower_bound"] > 0
    assert entry["solver_status"] == "optimal"
    result = tvm_deeploy.export_c(mod, target, tmp_path / "p", test_vectors=False)
    (op,) = [op for op in result.report["ops"] if op["engine"] == "cluster"]
    plan = op["plan"]
    assert plan["tile"] == entry["tile"] and plan["l1_bytes"] == entry["l1_bytes"]
    assert result.report["memory"]["L1"]["arena_bytes"] == entry["l1_bytes"]
    source = (tmp_path / "p" / "src" / "net_ops.c").read_text()
    assert "dpl_attention_tiled(&" in source and "dpl_exp2_lut[256]" in source
    # No mutable static buffer of the ops' own: scratch lives in the L1 arena, the only one declared.
    assert re.findall(r"^static (?:float|u?int\d+_t) (\w+)\[", source, re.MULTILINE) == ["dpl_l1_arena"]
