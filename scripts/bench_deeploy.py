"""Deeploy's microLlama INT8 networks built by tvm-deeploy: instructions per token under qemu -icount.

    python scripts/bench_deeploy.py [--networks microLlama1 microLlama16 ...] [--json build/bench_deeploy.json]
                                    [--keep DIR] [--deeploy-tests DIR]

Each network of ../shared/deeploy-tests/Models/microLlama/INT8 (Deeploy's own ONNX, its integer dialect
imported as integer Relax) is exported with Deeploy's inputs and golden outputs and run under qemu as
(a) TVM alone (export_c(offload=False), 1 hart), (b) offloaded on 1 hart, (c) offloaded on 8 harts, the
cluster only (npu=False: on RV32 the NPU is a software model). Every run must end with `Errors: 0` against
Deeploy's outputs. Prints, per network and variant, the slowest hart's instructions per token (tokens in:
1 for decode, S for a prompt), split into our kernels by op family (and by op shape in the JSON) and TVM's
glue, DMA bytes and the ISA;
writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

import tvm_deeploy
from tvm_deeploy.frontend import deeploy_dialect
from tvm_deeploy.targets import qemu

DEFAULT_TESTS = Path(__file__).resolve().parents[2] / "shared" / "deeploy-tests"
NETWORKS = {  # name: (tokens in, KV cache length in)
    "microLlama1": (1, 1), "microLlama2": (1, 2), "microLlama8": (1, 8), "microLlama16": (1, 16),
    "microLlama1_parallel": (1, 0), "microLlama8_parallel": (8, 0)}
VARIANTS = (("TVM alone", False, 1), ("deeploy, 1 hart", True, 1), ("deeploy, 8 harts", True, 8))


def _arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as archive:
        return [archive[name] for name in archive.files]


def run_variant(folder: Path, offload: bool, cores: int, out: Path) -> dict:
    started = time.time()
    samples = _arrays(folder / "inputs.npz")
    mod = tvm_deeploy.load_onnx(folder / "network.onnx", inputs=samples)
    inputs, _ = deeploy_dialect.harness_inputs(mod, samples)
    exported = tvm_deeploy.export_c(mod, tvm_deeploy.target(cores=cores, npu=False), out, offload=offload,
                                    inputs=inputs, expected_outputs=_arrays(folder / "outputs.npz"))
    run = qemu.run_project(out, harts=cores)
    if run.errors != 0:
        raise SystemExit(f"{out}: the run failed (exit code {run.exit_code}, errors {run.errors}):\n"
                         f"{run.output[-2000:]}")
    families: dict[str, int] = defaultdict(int)
    ops: dict[str, int] = defaultdict(int)
    for step in run.steps:
        offloaded = step.engine == "cluster"
        families[step.op.split()[0] if offloaded else "tvm glue"] += step.slowest  # the summary starts with it
        ops[step.op if offloaded else "tvm glue"] += step.slowest
    return {"instructions": run.slowest_hart_instructions, "per_hart": list(run.per_hart_instructions),
            "by_family": dict(sorted(families.items())), "by_op": dict(sorted(ops.items())),
            "dma_bytes": {"to_l1": run.dma_bytes[0], "to_l2": run.dma_bytes[1]}, "errors": run.errors,
            "checked": run.checked, "offloaded_steps": exported.report["counts"]["deeploy"],
            "tvm_steps": exported.report["counts"]["tvm"],
            "march": exported.report["rv32"]["march"],
            "seconds": round(time.time() - started, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=["microLlama1", "microLlama16",
                                                                                    "microLlama8_parallel"])
    parser.add_argument("--json", default="build/bench_deeploy.json", help="where to write the results")
    parser.add_argument("--keep", metavar="DIR", help="keep the exported projects in DIR")
    parser.add_argument("--deeploy-tests", default=str(DEFAULT_TESTS), help="the deeploy-tests folder")
    args = parser.parse_args(argv)
    missing = qemu.missing_tools()
    if missing:
        print(f"missing {', '.join(missing)}: run scripts/setup.sh", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="tvm-deeploy-bench-") as tmp:
        root = Path(args.keep or tmp)
        for name in args.networks:
            tokens, cache = NETWORKS[name]
            folder = Path(args.deeploy_tests) / "Models" / "microLlama" / "INT8" / name
            entry = {"network": name, "tokens_in": tokens, "kv_cache_in": cache, "variants": {}}
            for variant, offload, cores in VARIANTS:
                out = root / name / variant.replace(", ", "-").replace(" ", "_")
                result = run_variant(folder, offload, cores, out)
                result["per_token"] = result["instructions"] // tokens
                entry["variants"][variant] = result
                print_variant(name, variant, result, flush=True)
            baseline = entry["variants"]["TVM alone"]["instructions"]
            for result in entry["variants"].values():
                result["speedup_over_tvm"] = round(baseline / result["instructions"], 2)
            results.append(entry)
    print_table(results)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"networks": results}, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 0


def print_variant(name: str, variant: str, result: dict, flush: bool = False) -> None:
    families = ", ".join(f"{family} {count:,}" for family, count in result["by_family"].items())
    print(f"{name}, {variant} ({result['march']}): {result['instructions']:,} instructions on the slowest hart "
          f"[{families}], DMA {result['dma_bytes']['to_l1']:,} B to L1 / {result['dma_bytes']['to_l2']:,} B to L2, "
          f"Errors: {result['errors']} out of {result['checked']}", flush=flush)


def print_table(results: list[dict]) -> None:
    print(f"\n{'network':<22} {'S':>2} {'L':>3} {'variant':<18} {'ISA':<10} {'instr./token':>14} {'speedup':>8}")
    for entry in results:
        for variant, result in entry["variants"].items():
            print(f"{entry['network']:<22} {entry['tokens_in']:>2} {entry['kv_cache_in']:>3} {variant:<18} "
                  f"{result['march']:<10} {result['per_token']:>14,} {result['speedup_over_tvm']:>7.2f}x")


if __name__ == "__main__":
    sys.exit(main())
