"""RV32 benchmark: instructions on the slowest hart under qemu -icount, TVM alone against tvm-deeploy.

    python scripts/bench.py [--json build/bench.json] [--keep DIR]

A fixed set of int8 cases, each exported as a standalone C project (Siracusa, L1 256 KiB) and run by
`tvm_deeploy.targets.qemu` as (a) TVM alone (export_c(offload=False), 1 hart), (b) offloaded on 1 hart
(target cores=1) and (c) offloaded on 8 harts (cores=8); every run must end with `Errors: 0`:
  - int8 GEMM 64x256x64 in QDQ form (int8 in, int8 out, per-channel weight scales, zero points);
  - int8 attention prompt, S=64, 16 heads of 4, causal: QDQ int8 matmuls (Q Kᵀ, P V) around an fp32
    softmax, since fused int8 attention is not merged yet;
  - one int8 transformer block of microLlama dims (models.llama_block: 64 tokens, dim 64, 16 heads of 4,
    FFN 256, QDQ linear layers, float norms, softmax and SiLU).
Prints the int8 GEMM kernel's own instructions per MAC, then a table of instructions (slowest hart),
instructions per MAC and speedups over TVM alone; writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

import tvm_deeploy
from tvm_deeploy import models
from tvm_deeploy.targets import kernel_count, qemu

VARIANTS = (  # name, offload, cores (= harts)
    ("TVM alone", False, 1),
    ("deeploy, 1 hart", True, 1),
    ("deeploy, 8 harts", True, 8),
)


def qdq(bb, x, scale, zp):
    return bb.emit(relax.op.dequantize(x, relax.const(scale, "float32"), relax.const(zp, "int8")))


def quantize(bb, x, scale, zp):
    return bb.emit(relax.op.quantize(x, relax.const(scale, "float32"), relax.const(zp, "int8"), out_dtype="int8"))


def int8_gemm(m=64, k=256, n=64, seed=0) -> tvm.IRModule:
    """quantize(dequantize(x) @ dequantize(W) + bias): x int8 [m, k] with a zero point, W int8 [k, n] with
    per-column scales, the QDQ form quantizers produce."""
    rng = np.random.default_rng(seed)
    w_q = rng.integers(-127, 128, (k, n)).astype("int8")
    w_scale = rng.uniform(0.002, 0.02, n).astype("float32")
    bias = rng.standard_normal(n).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((m, k), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            w = bb.emit(relax.op.dequantize(relax.const(w_q), relax.const(w_scale), relax.const(np.zeros(n, "int8")),
                                            axis=1))
            y = bb.emit(relax.op.add(bb.emit(relax.op.matmul(qdq(bb, x, 0.02, -3), w)), relax.const(bias)))
            out = bb.emit_output(quantize(bb, y, 0.25, 2))
        bb.emit_func_output(out)
    return bb.get()


CASES = (  # name, module, MACs, note
    ("int8 GEMM 64x256x64 (QDQ)", int8_gemm, 64 * 256 * 64, ""),
    ("int8 attention S=64, 16x4", lambda: models.attention_layer(heads=16, head_dim=4, tokens=64, quantized=True),
     2 * 16 * 64 * 64 * 4, "fused int8 attention with the integer softmax, causal"),
    ("int8 microLlama block", lambda: models.llama_block(seq=64, dim=64, heads=16, ffn=256, quantized=True),
     64 * 64 * 64 * 4 + 2 * 16 * 64 * 64 * 4 + 3 * 64 * 64 * 256,
     "QDQ linear layers; RMSNorm, softmax, SiLU and residuals in fp32"),
)


def run_variant(mod, offload: bool, cores: int, folder: Path) -> dict:
    started = time.time()
    # The cluster only: on RV32 the NPU is a functional model in software, whose instructions are no speed.
    exported = tvm_deeploy.export_c(mod, tvm_deeploy.target(cores=cores, npu=False), folder, offload=offload)
    run = qemu.run_project(folder, harts=cores)
    if run.errors != 0:
        raise SystemExit(f"{folder}: the run failed (exit code {run.exit_code}):\n{run.output}")
    counts = exported.report["counts"]
    return {"instructions": run.slowest_hart_instructions, "per_hart": list(run.per_hart_instructions),
            "dma_bytes": {"to_l1": run.dma_bytes[0], "to_l2": run.dma_bytes[1]}, "errors": run.errors,
            "checked": run.checked, "offloaded_steps": counts["deeploy"], "tvm_steps": counts["tvm"],
            "march": exported.report["rv32"]["march"],
            "seconds": round(time.time() - started, 1),
            "steps": [{"step": s.step, "engine": s.engine, "op": s.op, "slowest_hart": s.slowest}
                      for s in run.steps]}


def kernel_rows() -> list[dict]:
    rows = []
    for label, options in (("int32 out", {}), ("requantized to int8", {"requantize": True})):
        count = kernel_count.gemm_s8_count(64, 64, 256, **options)
        rows.append({"kernel": f"dpl_gemm_s8 64x256x64, {label}", "instructions": count.instructions,
                     "per_mac": round(count.per_mac, 3), "errors": count.errors})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default="build/bench.json", help="where to write the results")
    parser.add_argument("--keep", metavar="DIR", help="keep the exported projects in DIR")
    args = parser.parse_args(argv)
    missing = qemu.missing_tools()
    if missing:
        print(f"missing {', '.join(missing)}: run scripts/setup.sh", file=sys.stderr)
        return 2
    results = {"kernel": kernel_rows(), "cases": []}
    print("int8 GEMM kernel on rv32imc (one call, one hart, gcc -O2):")
    for row in results["kernel"]:
        print(f"  {row['kernel']}: {row['instructions']:,} instructions, {row['per_mac']} per MAC")
    with tempfile.TemporaryDirectory(prefix="tvm-deeploy-bench-") as tmp:
        root = Path(args.keep or tmp)
        for name, build, macs, note in CASES:
            mod = build()
            case = {"case": name, "macs": macs, "note": note, "variants": {}}
            for variant, offload, cores in VARIANTS:
                folder = root / name.split()[1] / variant.replace(", ", "-").replace(" ", "_")
                case["variants"][variant] = run_variant(mod, offload, cores, folder)
            compare(case)
            results["cases"].append(case)
            print_case(case)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 0


def compare(case: dict) -> None:
    """Adds instructions per MAC and the speedup over TVM alone to every variant of a case."""
    baseline = case["variants"]["TVM alone"]["instructions"]
    for result in case["variants"].values():
        result["per_mac"] = round(result["instructions"] / case["macs"], 3)
        result["speedup_over_tvm"] = round(baseline / result["instructions"], 2)


def print_case(case: dict) -> None:
    print(f"\n{case['case']}: {case['macs']:,} MACs" + (f" -- {case['note']}" if case["note"] else ""))
    print(f"  {'variant':<18} {'ISA':<10} {'instructions':>14} {'per MAC':>9} {'speedup':>8}  offloaded steps")
    for variant, result in case["variants"].items():
        print(f"  {variant:<18} {result['march']:<10} {result['instructions']:>14,} {result['per_mac']:>9.2f} "
              f"{result['speedup_over_tvm']:>7.1f}x  {result['offloaded_steps']} of "
              f"{result['offloaded_steps'] + result['tvm_steps']}")


if __name__ == "__main__":
    sys.exit(main())
