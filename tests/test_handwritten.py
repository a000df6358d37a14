"""The hand-written fp32 C baseline (tvm_deeploy/lm/handwritten) generates the fp32 NumPy reference's tokens."""

import pytest

from tvm_deeploy.demo import CALIBRATION_TEXT, CHECKPOINT, TOKENIZER
from tvm_deeploy.lm import handwritten
from tvm_deeploy.lm.checkpoint import MICRO_LLAMA, load_checkpoint, random_checkpoint
from tvm_deeploy.lm.llama_reference import LlamaReference
from tvm_deeploy.lm.tokenizer import Tokenizer

PROMPT_TOKENS = 16


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    checkpoint = load_checkpoint(CHECKPOINT)
    prompt = Tokenizer.load(TOKENIZER).encode(CALIBRATION_TEXT, bos=True)[:PROMPT_TOKENS]
    expected = LlamaReference(checkpoint).generate(prompt, 12)
    folder = handwritten.write_program(checkpoint, prompt, 12, expected, tmp_path_factory.mktemp("hw") / "stories")
    return folder, expected


def test_stories260k_generates_the_fp32_reference_tokens_on_host(stories):
    folder, expected = stories
    run = handwritten.run_host(folder)
    assert (run.exit_code, run.errors, run.checked) == (0, 0, 12), run.output
    assert list(run.tokens) == expected


def test_micro_llama_generates_the_fp32_reference_tokens_on_host(tmp_path):
    """microLlama's dims: as many K/V heads as query heads, and an FFN a multiple of 16."""
    checkpoint = random_checkpoint(MICRO_LLAMA, seed=3)
    prompt = list(range(5, 5 + PROMPT_TOKENS))
    expected = LlamaReference(checkpoint).generate(prompt, 6)
    run = handwritten.run_host(handwritten.write_program(checkpoint, prompt, 6, expected, tmp_path / "micro"))
    assert (run.exit_code, run.errors, list(run.tokens)) == (0, 0, expected), run.output


def test_a_wrong_expected_token_is_counted(tmp_path):
    checkpoint = random_checkpoint(MICRO_LLAMA, seed=3)
    prompt = list(range(5, 5 + PROMPT_TOKENS))
    expected = LlamaReference(checkpoint).generate(prompt, 3)
    wrong = expected[:2] + [(expected[2] + 1) % MICRO_LLAMA.vocab_size]
    run = handwritten.run_host(handwritten.write_program(checkpoint, prompt, 3, wrong, tmp_path / "micro"))
    assert (run.exit_code, run.errors, list(run.tokens)) == (1, 1, expected)


def test_too_many_tokens_for_the_context_are_refused(tmp_path):
    checkpoint = random_checkpoint(MICRO_LLAMA, seed=3)
    with pytest.raises(ValueError, match="exceed the context of 256"):
        handwritten.write_program(checkpoint, list(range(250)), 7, [0] * 7, tmp_path / "micro")


@pytest.mark.rv32
def test_stories260k_under_qemu_counts_every_call(stories):
    folder, expected = stories
    run = handwritten.run_qemu(folder)
    assert (run.exit_code, run.errors, list(run.tokens)) == (0, 0, expected), run.output
    assert [c.function for c in run.calls] == ["prompt"] + ["decode"] * 11
    assert [c.call for c in run.calls] == list(range(12))
    # one hart, no DMA; a decode step costs about 2 M instructions, growing with the position (attention)
    assert all(len(c.instructions) == 1 and c.dma_to_l1 == c.dma_to_l2 == 0 for c in run.calls)
    decodes = [c.slowest for c in run.calls[1:]]
    assert 1_500_000 < decodes[0] < 3_000_000 and decodes == sorted(decodes)


def test_memory_bytes_count_the_checkpoint_once():
    """The weights are the checkpoint file's floats (rotary tables included, the shared head once)."""
    sizes = handwritten.memory_bytes(load_checkpoint(CHECKPOINT))
    assert sizes["weights"] == CHECKPOINT.stat().st_size - 7 * 4
    assert sizes["kv_cache"] == 2 * 5 * 512 * 32 * 4  # K and V, layers x context x kv_dim, fp32
    assert sizes["scratch"] == 4 * (4 * 64 + 2 * 172 + 512 + 512)
