"""RV32 benchmark of models as exporters write them (../shared/models): TVM alone against tvm-deeploy.

    python scripts/bench_exporters.py [MODEL.onnx ...] [--json build/bench_exporters.json] [--keep DIR]

Each model (default: the fp32 sdpa Llama and the per-channel static-QDQ Llama) is compiled as `tvm-deeploy
compile` does it for Siracusa without the NPU (on RV32 the NPU is a software model: no speed), as TVM alone
(offload=False, 1 hart) and offloaded on 8 harts, and run under qemu -icount; every run must end with
`Errors: 0`. Prints the slowest hart's instructions, the part of them in TVM's glue, DMA bytes and the ISA,
and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import tvm_deeploy
from tvm_deeploy.targets import qemu

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
DEFAULT_MODELS = ("llama_sdpa_dynamo.onnx", "llama_eager_qdq_pc.onnx")
VARIANTS = (("TVM alone", False, 1), ("deeploy, 8 harts", True, 8))  # name, offload, cores (= harts)


def run_variant(mod, offload: bool, cores: int, folder: Path) -> dict:
    exported = tvm_deeploy.export_c(mod, tvm_deeploy.target(cores=cores, npu=False), folder, offload=offload)
    run = qemu.run_project(folder, harts=cores)
    if run.errors != 0:
        raise SystemExit(f"{folder}: the run failed (exit code {run.exit_code}):\n{run.output}")
    kinds = {op["step"]: op["kind"] for op in exported.report["ops"]}
    slowest = max(range(cores), key=lambda hart: run.per_hart_instructions[hart])
    glue = sum(s.instructions[slowest] for s in run.steps if kinds[s.step] == "tvm")
    counts = exported.report["counts"]
    return {"instructions": run.slowest_hart_instructions, "glue_instructions": glue,
            "glue_share": round(glue / run.slowest_hart_instructions, 4),
            "dma_bytes": {"to_l1": run.dma_bytes[0], "to_l2": run.dma_bytes[1]}, "checked": run.checked,
            "offloaded_call_sites": counts["deeploy"], "offloaded_functions": counts["deeploy_functions"],
            "tvm_steps": counts["tvm"],
            "march": exported.report["rv32"]["march"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", default=[str(MODELS / name) for name in DEFAULT_MODELS])
    parser.add_argument("--json", default="build/bench_exporters.json", help="where to write the results")
    parser.add_argument("--keep", metavar="DIR", help="keep the exported projects in DIR")
    args = parser.parse_args(argv)
    missing = qemu.missing_tools()
    if missing:
        print(f"missing {', '.join(missing)}: run scripts/setup.sh", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="tvm-deeploy-bench-") as tmp:
        root = Path(args.keep or tmp)
        for path in map(Path, args.models):
            mod = tvm_deeploy.load_onnx(path)
            case = {"model": path.name, "variants": {}}
            for variant, offload, cores in VARIANTS:
                folder = root / path.stem / variant.replace(", ", "-").replace(" ", "_")
                case["variants"][variant] = run_variant(mod, offload, cores, folder)
            baseline = case["variants"]["TVM alone"]["instructions"]
            print(f"\n{path.name}")
            print(f"  {'variant':<18} {'ISA':<10} {'instructions':>12} {'in glue':>8} {'speedup':>8} "
                  f"{'DMA to L1':>10} {'to L2':>8}  offloaded")
            for variant, r in case["variants"].items():
                r["speedup_over_tvm"] = round(baseline / r["instructions"], 2)
                print(f"  {variant:<18} {r['march']:<10} {r['instructions']:>12,} {r['glue_share']:>8.1%} "
                      f"{r['speedup_over_tvm']:>7.2f}x {r['dma_bytes']['to_l1']:>10,} {r['dma_bytes']['to_l2']:>8,}"
                      f"  {r['offloaded_call_sites']} calls of {r['offloaded_functions']} functions")
            results.append(case)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
