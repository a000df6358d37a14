"""`tvm-deeploy demo`: a small language model generating text from a standalone C program.

The shipped stories260K-sized checkpoint (trained by scripts/train_tiny_llama.py on the project's small
story corpus) is quantized to int8 (activation ranges calibrated on a short story), compiled for the
`deeploy` target into a C project (prompt and decode functions, KV cache in the static arena), built and
run on this host. The generated tokens are checked against the package's NumPy reference of the same int8
model and compared with TVM's own llvm build (float-defined QDQ) and with the fp32 model. With qemu and
the RISC-V toolchain present, the same program also runs on the RV32 cluster for instructions per token.
"""

from __future__ import annotations

import collections
import tempfile
import time
from pathlib import Path

from .lm import handwritten
from .lm.checkpoint import load_checkpoint
from .lm.llama import build_decoder
from .lm.llama_reference import LlamaReference, calibrate
from .lm.tokenizer import Tokenizer
from .program.generate import check_contract, check_generation, export_generator, generate_in_vm
from .targets.qemu import QemuError, missing_tools, run_host, run_project
from .targets.target import platform_of
from .targets.target import target as deeploy_target

DATA = Path(__file__).resolve().parent / "data"
CHECKPOINT = DATA / "stories260k.bin"
TOKENIZER = DATA / "tok512.bin"
PROMPT = "Once upon a time, there was a little girl named Lily."
TOKENS = 48
# The int8 activation ranges come from running the fp32 model on this (the calibration prompt).
CALIBRATION_TEXT = ("Once upon a time, there was a little boy named Tom. He liked to play with his red ball in the "
                    "park. One day, the ball rolled into the pond. Tom was sad. His mom said, \"Do not worry, we "
                    "can get it back.\" She found a long stick and pulled the ball out. Tom smiled and hugged his "
                    "mom. They went home happy.")


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def _memory_line(report: dict) -> str:
    memory = report["memory"]
    weights = report["weights"]["bytes"]
    parts = [f"weights {_kib(weights)} (of which NPU weight memory {_kib(report['weights']['npu_bytes'])})",
             f"activations {_kib(memory['L2']['arena_bytes'])} (L2 arena)",
             f"KV cache {_kib(memory['state']['arena_bytes'])} (L2, kept across calls)",
             f"L1 {_kib(memory['L1']['arena_bytes'])} (tiles)"]
    return ", ".join(parts)


def _engine_line(report: dict) -> str:
    counts = collections.Counter(op["engine"] for op in report["ops"])
    names = {"npu": "on the NPU", "cluster": "on the cluster", "tvm": "in TVM's glue", "copy": "copies"}
    return ", ".join(f"{counts[e]} {names.get(e, e)}" for e in ("npu", "cluster", "tvm", "copy") if counts[e])


def _agreement(tokens, reference) -> str:
    same = next((i for i, (a, b) in enumerate(zip(tokens, reference)) if a != b), len(reference))
    equal = sum(a == b for a, b in zip(tokens, reference))
    return f"{equal}/{len(reference)} tokens equal, identical for the first {same}"


def run_demo(out=print, prompt: str = PROMPT, n_tokens: int = TOKENS, qemu: bool = True) -> int:
    """Run the demo, printing to `out`; 0 when the C program's tokens equal the NumPy reference's."""
    checkpoint, tokenizer = load_checkpoint(CHECKPOINT), Tokenizer.load(TOKENIZER)
    c = checkpoint.config
    prompt_ids = tokenizer.encode(prompt, bos=True)
    out(f"Language model: a Llama of stories260K's size (dim {c.dim}, {c.n_layers} layers, {c.n_heads} heads / "
        f"{c.n_kv_heads} KV heads, FFN {c.hidden_dim}, vocab {c.vocab_size}, context {c.seq_len}), "
        f"{CHECKPOINT.name}; int8 weights and activations")
    out(f"Prompt: {prompt!r} ({len(prompt_ids)} tokens)")
    quant = calibrate(checkpoint, tokenizer.encode(CALIBRATION_TEXT, bos=True))
    mod = build_decoder(checkpoint, len(prompt_ids), quant)
    check_generation(check_contract(mod), prompt_ids, n_tokens)
    expected = LlamaReference(checkpoint, quant).generate(prompt_ids, n_tokens)

    target = deeploy_target()
    platform = platform_of(target)
    with tempfile.TemporaryDirectory(prefix="tvm-deeploy-demo-") as tmp:
        start = time.perf_counter()
        exported = export_generator(mod, target, Path(tmp) / "lm", prompt_ids, n_tokens, expected)
        out(f"Compiled for deeploy ({platform.name}: {platform.cores} cores, L1 {_kib(platform.l1_bytes)}"
            f"{', NPU' if platform.npu else ''}) in {time.perf_counter() - start:.1f} s: a C project with "
            f"prompt and decode functions")
        report = exported.report
        out(f"  ops: {_engine_line(report)}")
        out(f"  memory: {_memory_line(report)}")
        run = run_host(exported.out_dir)
        if run.exit_code != 0 and run.errors is None:
            out(f"the C program failed (exit {run.exit_code}):\n{run.output}")
            return 1
        tokens = list(run.tokens)
        out("")
        out(f"Generated by the C program on this host ({n_tokens} tokens, greedy):")
        out(f"  {tokenizer.decode(prompt_ids)}{tokenizer.decode(tokens)}")
        out(f"  token ids: {tokens}")
        out(f"  {n_tokens / run.seconds:.1f} tokens/s on this host (the program's wall clock, prompt included); "
            f"{_handwritten_speed(checkpoint, prompt_ids, n_tokens, Path(tmp) / 'handwritten')}")
        ok = tokens == expected
        out(f"  NumPy int8 reference: {_agreement(tokens, expected)}: {'MATCH' if ok else 'MISMATCH'}")
        out(f"  TVM llvm build of the same QDQ graph (float-defined): "
            f"{_agreement(generate_in_vm(mod, prompt_ids, n_tokens), tokens)}")
        fp32 = LlamaReference(checkpoint).generate(prompt_ids, n_tokens)
        out(f"  fp32 model: {_agreement(fp32, tokens)}: \"{tokenizer.decode(fp32)}\"")
        if qemu:
            _report_qemu(mod, prompt_ids, n_tokens, expected, Path(tmp) / "lm-cluster", out)
    out("")
    out("demo: the C program's tokens equal the reference" if ok else "demo: MISMATCH against the reference")
    return 0 if ok else 1


def _handwritten_speed(checkpoint, prompt_ids, n_tokens, folder: Path) -> str:
    """The hand-written fp32 C forward pass (lm/handwritten) run and timed the same way, for comparison."""
    fp32 = LlamaReference(checkpoint).generate(prompt_ids, n_tokens)
    try:
        run = handwritten.run_host(handwritten.write_program(checkpoint, prompt_ids, n_tokens, fp32, folder))
    except QemuError as err:
        return f"the hand-written fp32 C failed to build: {str(err).splitlines()[0]}"
    if run.errors != 0:
        return f"the hand-written fp32 C gave other tokens than the fp32 reference ({run.errors} of {n_tokens})"
    return f"hand-written fp32 C (one core): {n_tokens / run.seconds:.1f} tokens/s"


def _report_qemu(mod, prompt_ids, n_tokens, expected, folder: Path, out) -> None:
    """Instructions per token of the same model on the RV32 cluster (qemu has no NPU: its functional model
    would run on a hart and be counted, so this build keeps every op on the cluster)."""
    missing = missing_tools()
    if missing:
        out(f"  (instructions per token need {', '.join(missing)}: run scripts/setup.sh)")
        return
    target = deeploy_target(npu=False)
    harts = platform_of(target).cores
    try:
        run = run_project(export_generator(mod, target, folder, prompt_ids, n_tokens, expected).out_dir, harts)
    except QemuError as err:
        out(f"  qemu run failed: {err}")
        return
    prompt = next(c for c in run.calls if c.function == "prompt")
    out(f"  RV32 cluster under qemu (no NPU, {harts} harts, slowest hart): prompt {prompt.slowest:,} instructions "
        f"({prompt.slowest // len(prompt_ids):,} per prompt token), decode {run.decode_instructions_per_token:,.0f} "
        f"instructions per token; tokens {'equal' if run.errors == 0 else 'DIFFERENT'} to the reference")
