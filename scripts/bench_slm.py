"""Benchmark: the int8 Llama decoder as a standalone C program on the RV32 cluster under qemu.

For microLlama dims (dim 64, 8 layers, 16 heads of 4, FFN 256; seeded random weights) and stories260K
dims (the shipped trained checkpoint), both modes (prompt: instructions per prompt token; decode:
instructions per generated token, averaged over the decode calls), four builds:

  handwritten  plain fp32 C written by hand (tvm_deeploy/lm/handwritten, in the style of llama2.c's run.c),
               the prompt one token at a time, 1 hart
  tvm          TVM alone: every op through TVM's C glue (float-defined QDQ), 1 hart
  offload-1    our int8 offload on the cluster (no NPU: qemu has none to count), 1 hart
  offload-8    the same offload built for 8 cores (kernels and TVM's split glue forked over them), 8 harts

plus DMA bytes per decode token, the arena, KV-cache and weight bytes, the compile (export) time, and where a
decode token's instructions go on the slowest hart (our kernels against TVM's glue). Every run checks its
tokens against the NumPy reference (the fp32 one for handwritten; TVM alone: against TVM's own build in the
VM). All run the same way: gcc -O2, qemu -icount, instructions of the slowest hart per call. Prints a table
and writes JSON. `--kv-cache int8` builds the int8 KV cache (microLlama then at its full context 512, which
only the int8 cache fits in L2; the hand-written C keeps its float32 cache); `--builds` picks the builds;
every row says its "kv_cache".

    python scripts/bench_slm.py [--models stories260K] [--json bench_slm.json] [--prompt-tokens 16] [--tokens 4]
                                [--kv-cache int8] [--builds offload-1 offload-8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from tvm_deeploy.demo import CALIBRATION_TEXT, CHECKPOINT, TOKENIZER
from tvm_deeploy.lm import handwritten
from tvm_deeploy.lm.checkpoint import MICRO_LLAMA, load_checkpoint, random_checkpoint
from tvm_deeploy.lm.llama import build_decoder
from tvm_deeploy.lm.llama_reference import LlamaReference, calibrate
from tvm_deeploy.lm.tokenizer import Tokenizer
from tvm_deeploy.program.generate import export_generator, generate_in_vm
from tvm_deeploy.targets.qemu import missing_tools, run_project
from tvm_deeploy.targets.target import target as deeploy_target

BUILDS = (("tvm", False, 1), ("offload-1", True, 1), ("offload-8", True, 8))
MODELS = ("microLlama", "stories260K")
GLUE_ENGINES = ("tvm", "copy")  # steps through TVM's glue; every other engine runs our kernels


def _checkpoint(name: str, kv_cache: str):
    if name == "stories260K":
        return load_checkpoint(CHECKPOINT)
    # an int8 cache fits microLlama's full context in L2
    return random_checkpoint(dataclasses.replace(MICRO_LLAMA, seq_len=512 if kv_cache == "int8" else 256), seed=0)


def _decode_split(run) -> dict:
    """A decode token's instructions on the slowest hart: in our kernels and in TVM's glue (mean per call)."""
    decodes = sum(c.function == "decode" for c in run.calls)
    if not decodes:
        return {"decode_kernel_instructions_per_token": None, "decode_glue_instructions_per_token": None}
    steps = [s for s in run.steps if s.function == "decode"]
    slowest = max(range(run.harts), key=lambda h: sum(s.instructions[h] for s in steps))
    kernel = sum(s.instructions[slowest] for s in steps if s.engine not in GLUE_ENGINES)
    glue = sum(s.instructions[slowest] for s in steps if s.engine in GLUE_ENGINES)
    return {"decode_kernel_instructions_per_token": round(kernel / decodes),
            "decode_glue_instructions_per_token": round(glue / decodes)}


def _decode_dma_bytes(run) -> int:
    """DMA bytes (both directions) per decode call, on average."""
    decodes = [c for c in run.calls if c.function == "decode"]
    return round(sum(c.dma_to_l1 + c.dma_to_l2 for c in decodes) / len(decodes)) if decodes else 0


def _bench_handwritten(name, checkpoint, prompt, n_tokens, out_dir: Path) -> dict:
    """The hand-written fp32 C on 1 hart; its tokens against the fp32 NumPy reference."""
    expected = LlamaReference(checkpoint).generate(prompt, n_tokens)
    start = time.perf_counter()
    folder = handwritten.write_program(checkpoint, prompt, n_tokens, expected, out_dir / f"{name}-handwritten")
    compile_seconds = time.perf_counter() - start
    run = handwritten.run_qemu(folder, timeout=3600)
    prompt_call = next(c for c in run.calls if c.function == "prompt")
    sizes = handwritten.memory_bytes(checkpoint)
    return {
        "model": name, "build": "handwritten", "harts": 1, "errors": run.errors, "tokens": list(run.tokens),
        "expected_tokens": expected, "prompt_tokens": len(prompt),
        "prompt_instructions_per_token": round(prompt_call.slowest / len(prompt)),
        "decode_instructions_per_token": round(run.decode_instructions_per_token),
        "decode_kernel_instructions_per_token": None, "decode_glue_instructions_per_token": None,
        "decode_dma_bytes_per_token": _decode_dma_bytes(run),
        "arena_bytes": sizes["scratch"], "kv_cache_bytes": sizes["kv_cache"], "l1_bytes": 0,
        "weight_bytes": sizes["weights"], "compile_seconds": round(compile_seconds, 1),
    }


def _bench_model(name, checkpoint, calibration, prompt_len, n_tokens, out_dir: Path, kv_cache: str,
                 builds: list[str]) -> list[dict]:
    prompt = calibration[:prompt_len]
    rows = []
    if "handwritten" in builds:
        rows.append({**_bench_handwritten(name, checkpoint, prompt, n_tokens, out_dir), "kv_cache": "float32"})
        print(_row(rows[-1]), flush=True)
    quant = calibrate(checkpoint, calibration)
    mod = build_decoder(checkpoint, prompt_len, quant, kv_cache=kv_cache)
    reference = LlamaReference(checkpoint, quant, kv_cache=kv_cache).generate(prompt, n_tokens)
    for build, offload, harts in (b for b in BUILDS if b[0] in builds):
        expected = reference if offload else generate_in_vm(mod, prompt, n_tokens)
        start = time.perf_counter()
        # The offloaded ops fork over the target's cores: one build per hart count.
        exported = export_generator(mod, deeploy_target(npu=False, cores=harts), out_dir / f"{name}-{build}", prompt,
                                    n_tokens, expected, offload=offload)
        compile_seconds = time.perf_counter() - start
        run = run_project(exported.out_dir, harts, timeout=3600)
        prompt_call = next(c for c in run.calls if c.function == "prompt")
        memory = exported.report["memory"]
        rows.append({
            "model": name, "build": build, "harts": harts, "errors": run.errors, "tokens": list(run.tokens),
            "expected_tokens": list(expected), "prompt_tokens": prompt_len,
            "prompt_instructions_per_token": round(prompt_call.slowest / prompt_len),
            "decode_instructions_per_token": round(run.decode_instructions_per_token),
            **_decode_split(run), "decode_dma_bytes_per_token": _decode_dma_bytes(run),
            "arena_bytes": memory["L2"]["arena_bytes"], "kv_cache_bytes": memory["state"]["arena_bytes"],
            "l1_bytes": memory["L1"]["arena_bytes"], "weight_bytes": exported.report["weights"]["bytes"],
            "compile_seconds": round(compile_seconds, 1), "kv_cache": kv_cache,
        })
        print(_row(rows[-1]), flush=True)
    return rows


HEADER = (f"{'model':<12} {'build':<12} {'prompt instr/token':>19} {'decode instr/token':>19} "
          f"{'kernels':>10} {'glue':>10} {'DMA/token':>10} {'arena':>9} {'KV cache':>9} {'weights':>9} "
          f"{'compile':>8} errors")


def _count(value) -> str:
    return f"{value:>10,}" if value is not None else f"{'-':>10}"


def _row(r: dict) -> str:
    return (f"{r['model']:<12} {r['build']:<12} {r['prompt_instructions_per_token']:>19,} "
            f"{r['decode_instructions_per_token']:>19,} {_count(r['decode_kernel_instructions_per_token'])} "
            f"{_count(r['decode_glue_instructions_per_token'])} {r['decode_dma_bytes_per_token']:>10,} "
            f"{r['arena_bytes']:>9,} {r['kv_cache_bytes']:>9,} "
            f"{r['weight_bytes']:>9,} {r['compile_seconds']:>7.1f}s {r['errors']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="bench_slm.json", help="where to write the results")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=4, help="generated tokens (1 from the prompt, the rest decode)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), metavar="NAME",
                        help=f"the models to run (default: all of {', '.join(MODELS)})")
    parser.add_argument("--kv-cache", choices=("float32", "int8"), default="float32",
                        help="the KV cache's type (int8: microLlama at context 512)")
    builds = ("handwritten",) + tuple(b[0] for b in BUILDS)
    parser.add_argument("--builds", nargs="+", choices=builds, default=list(builds), metavar="BUILD",
                        help=f"the builds to run (default: all of {', '.join(builds)})")
    args = parser.parse_args()
    if missing_tools():
        parser.error(f"missing {', '.join(missing_tools())}: run scripts/setup.sh")
    print(HEADER, flush=True)
    rows = []
    calibration = Tokenizer.load(TOKENIZER).encode(CALIBRATION_TEXT, bos=True)
    with tempfile.TemporaryDirectory(prefix="bench-slm-") as tmp:
        for name in args.models:
            rows += _bench_model(name, _checkpoint(name, args.kv_cache), calibration, args.prompt_tokens, args.tokens,
                                 Path(tmp), args.kv_cache, args.builds)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.json}")
    ratios = [f"{r['model']} {r['build']} {r['decode_instructions_per_token'] / _handwritten(rows, r):.2f}x"
              for r in rows if r["build"] != "handwritten" and _handwritten(rows, r)]
    if ratios:
        print("decode instructions per token against the hand-written fp32 C on 1 hart: " + ", ".join(ratios))
    ok = all(r["errors"] == 0 and r["tokens"] == r["expected_tokens"] for r in rows)
    return 0 if ok else 1


def _handwritten(rows: list[dict], row: dict) -> int | None:
    """The hand-written build's decode instructions per token for the row's model (None: not run)."""
    return next((r["decode_instructions_per_token"] for r in rows
                 if r["model"] == row["model"] and r["build"] == "handwritten"), None)


if __name__ == "__main__":
    raise SystemExit(main())
