"""The language model end to end: the int8 decoder compiled to the standalone C program generates the
same tokens as the package's NumPy reference, on this host and on RV32 under qemu."""

import dataclasses

import pytest

from tvm_deeploy.demo import CALIBRATION_TEXT, CHECKPOINT, TOKENIZER
from tvm_deeploy.lm.checkpoint import MICRO_LLAMA, STORIES_260K, load_checkpoint, random_checkpoint
from tvm_deeploy.lm.llama import build_decoder
from tvm_deeploy.lm.llama_reference import LlamaReference, calibrate
from tvm_deeploy.lm.tokenizer import Tokenizer
from tvm_deeploy.program.generate import export_generator
from tvm_deeploy.targets.qemu import run_host, run_project
from tvm_deeploy.targets.target import target

TOKENS = 20


@pytest.fixture(scope="module")
def stories():
    checkpoint = load_checkpoint(CHECKPOINT)
    assert checkpoint.config == STORIES_260K
    tokenizer = Tokenizer.load(TOKENIZER)
    prompt = tokenizer.encode("Once upon a time, there was a big dog named Max.", bos=True)
    quant = calibrate(checkpoint, tokenizer.encode(CALIBRATION_TEXT, bos=True))
    expected = LlamaReference(checkpoint, quant).generate(prompt, TOKENS)
    return build_decoder(checkpoint, len(prompt), quant), prompt, expected


@pytest.fixture(scope="module")
def stories_project(stories, tmp_path_factory):
    mod, prompt, expected = stories
    return export_generator(mod, target(), tmp_path_factory.mktemp("stories") / "lm", prompt, TOKENS, expected)


def test_stories260k_int8_generates_the_reference_tokens_on_host(stories, stories_project):
    run = run_host(stories_project.out_dir)
    assert (run.exit_code, run.errors, run.checked) == (0, 0, TOKENS)
    assert list(run.tokens) == stories[2]
    memory = stories_project.report["memory"]
    assert memory["state"]["arena_bytes"] == 2 * 5 * 4 * 512 * 8 * 4  # fp32 K and V per layer, whole context
    assert memory["weights"]["owner"] == "npu" and memory["weights"]["arena_bytes"] > 0


def test_stories260k_program_is_clean_under_sanitizers(stories, stories_project):
    """The whole generator (both functions, the KV cache state, every kernel) under ASan and UBSan."""
    run = run_host(stories_project.out_dir, sanitize=True)
    assert (run.exit_code, run.errors, list(run.tokens)) == (0, 0, stories[2]), run.output[-2000:]


@pytest.mark.rv32
def test_stories260k_int8_generates_the_reference_tokens_under_qemu(stories, stories_project):
    run = run_project(stories_project.out_dir, harts=8)
    assert (run.exit_code, run.errors) == (0, 0)
    assert list(run.tokens) == stories[2]
    assert [c.function for c in run.calls] == ["prompt"] + ["decode"] * (TOKENS - 1)
    assert all(c.slowest > 0 for c in run.calls)


def test_micro_llama_at_context_512_with_an_int8_kv_cache(tmp_path):
    """microLlama's full context of 512 positions fits L2 with an int8 KV cache (512 KiB; float32 would
    take 2 MiB): the C program generates the reference's tokens."""
    checkpoint = random_checkpoint(dataclasses.replace(MICRO_LLAMA, seq_len=512), seed=0)
    prompt = list(range(1, 17))
    quant = calibrate(checkpoint, prompt)
    expected = LlamaReference(checkpoint, quant, kv_cache="int8").generate(prompt, 8)
    exported = export_generator(build_decoder(checkpoint, len(prompt), quant, kv_cache="int8"), target(npu=False),
                                tmp_path / "lm", prompt, 8, expected)
    state = exported.report["memory"]["state"]
    assert state["level"] == "L2" and state["arena_bytes"] == 8 * 2 * 16 * 512 * 4
    assert {t["dtype"] for t in state["tensors"].values()} == {"int8"}
    assert exported.report["memory"]["L2"]["total_bytes"] <= exported.report["memory"]["L2"]["capacity_bytes"]
    # decode's attention reads the int8 cache itself (dequantized in L1): TVM only writes the cache
    decode = [op for op in exported.report["ops"] if op["function"] == "decode"]
    assert sum(op["op"].startswith("attention float32") and op["op"].endswith("int8 kv") for op in decode) == 8
    assert {op["op"] for op in decode if op["engine"] == "tvm" and "int8[1, 16, 512, 4]" in str(op["inputs"])} \
        == {"kv_write_decode"}
    # the prompt's attention still reads its projections in place (no layout op left to TVM)
    assert not [op for op in exported.report["ops"] if op["engine"] == "tvm" and op["op"].startswith("transpose")]
    run = run_host(exported.out_dir)
    assert (run.exit_code, run.errors, list(run.tokens)) == (0, 0, expected)


def test_micro_llama_int8_on_the_cluster_generates_the_reference_tokens(tmp_path):
    checkpoint = random_checkpoint(MICRO_LLAMA, seed=0)
    prompt = list(range(1, 17))
    quant = calibrate(checkpoint, prompt)
    expected = LlamaReference(checkpoint, quant).generate(prompt, 8)
    exported = export_generator(build_decoder(checkpoint, len(prompt), quant), target(npu=False), tmp_path / "lm",
                                prompt, 8, expected)
    assert {op["engine"] for op in exported.report["ops"]} == {"cluster", "tvm"}
    run = run_host(exported.out_dir)
    assert (run.exit_code, run.errors, list(run.tokens)) == (0, 0, expected)
