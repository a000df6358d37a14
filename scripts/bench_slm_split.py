"""Where the int8 stories260K decoder's instructions go: per prompt token and per decoded token, on the slowest
hart of each step under qemu (-icount, rv32imafc), split into our kernels by op family (gemm, attention,
rms_norm, swiglu, rope, residual add, ...) and TVM's glue, for 1 and 8 harts. Tokens are checked against
the NumPy reference. Prints a table and writes JSON.

    python scripts/bench_slm_split.py [--json bench_slm_split.json] [--prompt-tokens 16] [--tokens 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

from tvm_deeploy.demo import CALIBRATION_TEXT, CHECKPOINT, TOKENIZER
from tvm_deeploy.lm.checkpoint import load_checkpoint
from tvm_deeploy.lm.llama import build_decoder
from tvm_deeploy.lm.llama_reference import LlamaReference, calibrate
from tvm_deeploy.lm.tokenizer import Tokenizer
from tvm_deeploy.program.generate import export_generator
from tvm_deeploy.targets.qemu import missing_tools, run_project
from tvm_deeploy.targets.target import target as deeploy_target


def _part(step) -> str:
    """The step's op family (the first word of an offloaded op's summary), "tvm glue" or "copy"."""
    if step.engine == "tvm":
        return "tvm glue"
    return step.op.split()[0] if step.engine != "copy" else "copy"


def measure(harts: int, prompt_tokens: int, tokens: int, out_dir: Path) -> dict:
    checkpoint = load_checkpoint(CHECKPOINT)
    calibration = Tokenizer.load(TOKENIZER).encode(CALIBRATION_TEXT, bos=True)
    prompt = calibration[:prompt_tokens]
    quant = calibrate(checkpoint, calibration)
    expected = LlamaReference(checkpoint, quant).generate(prompt, tokens)
    exported = export_generator(build_decoder(checkpoint, len(prompt), quant), deeploy_target(npu=False, cores=harts),
                                out_dir / f"harts{harts}", prompt, tokens, expected)
    run = run_project(exported.out_dir, harts, timeout=3600)
    row = {"model": "stories260K", "build": f"offload-{harts}", "harts": harts, "isa": "rv32imafc",
           "errors": run.errors, "tokens_equal_reference": list(run.tokens) == list(expected)}
    for function, per in (("prompt", len(prompt)), ("decode", sum(c.function == "decode" for c in run.calls))):
        calls = [c for c in run.calls if c.function == function]
        parts, steps = defaultdict(int), defaultdict(int)
        for step in (s for s in run.steps if s.function == function):
            parts[_part(step)] += step.slowest
            steps[_part(step)] += 1
        row[function] = {"instructions_per_token": round(sum(c.slowest for c in calls) / per),
                         "dma_bytes_per_token": round(sum(c.dma_to_l1 + c.dma_to_l2 for c in calls) / per),
                         "parts_per_token": {k: round(v / per) for k, v in sorted(parts.items())},
                         "steps": dict(sorted(steps.items()))}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="bench_slm_split.json", help="where to write the results")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=4, help="generated tokens (1 from the prompt, the rest decode)")
    parser.add_argument("--harts", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    if missing_tools():
        parser.error(f"missing {', '.join(missing_tools())}: run scripts/setup.sh")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-slm-split-") as tmp:
        for harts in args.harts:
            rows.append(measure(harts, args.prompt_tokens, args.tokens, Path(tmp)))
            r = rows[-1]
            print(f"{r['build']}: errors {r['errors']}, tokens equal the reference: {r['tokens_equal_reference']}")
            for function in ("prompt", "decode"):
                parts = ", ".join(f"{k} {v:,}" for k, v in r[function]["parts_per_token"].items())
                print(f"  {function}: {r[function]['instructions_per_token']:,} instructions/token ({parts}); "
                      f"DMA {r[function]['dma_bytes_per_token']:,} bytes/token", flush=True)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if all(r["errors"] == 0 and r["tokens_equal_reference"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
