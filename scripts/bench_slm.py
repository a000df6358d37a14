"""Benchmark: the int8 Llama decoder as a standalone C program on the RV32 cluster under qemu.

For microLlama dims (dim 64, 8 layers, 16 heads of 4, FFN 256; seeded random weights) and stories260K
dims (the shipped trained checkpoint), both modes (prompt: instructions per prompt token; decode:
instructions per generated token, averaged over the decode calls), three builds:

  tvm        TVM alone: every op through TVM's C glue (float-defined QDQ), 1 hart
  offload-1  our offload on the cluster (no NPU: qemu has none to count), 1 hart
  offload-8  the same program on 8 harts

plus the arena, KV-cache and weight bytes and the compile (export) time. Every run checks its tokens
against the NumPy reference (TVM alone: against TVM's own build in the VM). Prints a table and writes JSON.

    python scripts/bench_slm.py [--json bench_slm.json] [--prompt-tokens 16] [--tokens 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tvm_deeploy.demo import CALIBRATION_TEXT, CHECKPOINT, TOKENIZER
from tvm_deeploy.lm.checkpoint import MICRO_LLAMA, load_checkpoint, random_checkpoint
from tvm_deeploy.lm.llama import build_decoder
from tvm_deeploy.lm.llama_reference import LlamaReference, calibrate
from tvm_deeploy.lm.tokenizer import Tokenizer
from tvm_deeploy.program.generate import export_generator, generate_in_vm
from tvm_deeploy.targets.qemu import missing_tools, run_project
from tvm_deeploy.targets.target import target as deeploy_target

BUILDS = (("tvm", False, 1), ("offload-1", True, 1), ("offload-8", True, 8))


def _models():
    tokenizer = Tokenizer.load(TOKENIZER)
    calibration = tokenizer.encode(CALIBRATION_TEXT, bos=True)
    yield "microLlama", random_checkpoint(MICRO_LLAMA, seed=0), calibration
    yield "stories260K", load_checkpoint(CHECKPOINT), calibration


def _bench_model(name, checkpoint, calibration, prompt_len, n_tokens, out_dir: Path) -> list[dict]:
    prompt = calibration[:prompt_len]
    quant = calibrate(checkpoint, calibration)
    mod = build_decoder(checkpoint, prompt_len, quant)
    reference = LlamaReference(checkpoint, quant).generate(prompt, n_tokens)
    rows = []
    for build, offload, harts in BUILDS:
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
            "prompt_tokens": prompt_len,
            "prompt_instructions_per_token": round(prompt_call.slowest / prompt_len),
            "decode_instructions_per_token": round(run.decode_instructions_per_token),
            "arena_bytes": memory["L2"]["arena_bytes"], "kv_cache_bytes": memory["state"]["arena_bytes"],
            "l1_bytes": memory["L1"]["arena_bytes"], "weight_bytes": exported.report["weights"]["bytes"],
            "compile_seconds": round(compile_seconds, 1),
        })
        print(_row(rows[-1]), flush=True)
    return rows


HEADER = (f"{'model':<12} {'build':<10} {'prompt instr/token':>19} {'decode instr/token':>19} {'arena':>9} "
          f"{'KV cache':>9} {'weights':>9} {'compile':>8} errors")


def _row(r: dict) -> str:
    return (f"{r['model']:<12} {r['build']:<10} {r['prompt_instructions_per_token']:>19,} "
            f"{r['decode_instructions_per_token']:>19,} {r['arena_bytes']:>9,} {r['kv_cache_bytes']:>9,} "
            f"{r['weight_bytes']:>9,} {r['compile_seconds']:>7.1f}s {r['errors']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="bench_slm.json", help="where to write the results")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=4, help="generated tokens (1 from the prompt, the rest decode)")
    args = parser.parse_args()
    if missing_tools():
        parser.error(f"missing {', '.join(missing_tools())}: run scripts/setup.sh")
    print(HEADER, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-slm-") as tmp:
        for name, checkpoint, calibration in _models():
            rows += _bench_model(name, checkpoint, calibration, args.prompt_tokens, args.tokens, Path(tmp))
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
