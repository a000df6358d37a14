"""RV32 benchmark of the int8 GEMM kernel at decode shapes: instructions per MAC under qemu -icount.

    python scripts/bench_decode_gemm.py [--json build/bench_decode_gemm.json] [--k 64]

One dpl_gemm_s8 call on one hart (rv32imc, gcc -O2, `tvm_deeploy.targets.kernel_count`), requantized to
int8 with the fixed-point scaling QDQ layers use, for M = 1..4 rows (a decode step's token, or a few),
K = 64 and N = 32, 64, 256 (B as [k, n]) and N = 64 with B transposed ([n, k]); N = 32 and 8 are a
core's share of a split GEMV. Beside each [k, n] row, the same GEMM on dpl_gemm_s8_lanes with B packed in lane
words (plan/lanes.py; 2.67x the weight bytes). Each call is checked against the NumPy reference (errors must
be 0). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tvm_deeploy.targets import kernel_count, qemu

SHAPES = ((8, False), (32, False), (64, False), (256, False), (64, True))  # (N, B transposed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default="build/bench_decode_gemm.json", help="where to write the results")
    parser.add_argument("--k", type=int, default=64, help="the reduction length")
    args = parser.parse_args(argv)
    missing = qemu.missing_tools()
    if missing:
        print(f"missing {', '.join(missing)}: run scripts/setup.sh", file=sys.stderr)
        return 2
    rows = []
    print(f"{'M':>2} {'N':>4} {'B':>5} {'instructions':>13} {'per MAC':>8} errors")
    for m in (1, 2, 3, 4):
        for n, transposed in SHAPES:
            for lanes in (False, True) if not transposed else (False,):
                count = kernel_count.gemm_s8_count(m, n, args.k, transposed=transposed, requantize=True, lanes=lanes)
                layout = "lanes" if lanes else "T" if transposed else ""
                rows.append({"m": m, "n": n, "k": args.k, "b_transposed": transposed, "b_lanes": lanes,
                             "isa": "rv32imc", "instructions": count.instructions,
                             "per_mac": round(count.per_mac, 3), "errors": count.errors})
                print(f"{m:>2} {n:>4} {layout:>5} {count.instructions:>13,} {count.per_mac:>8.3f} {count.errors}",
                      flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
