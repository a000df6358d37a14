"""NPU benchmark: per layer of a microLlama block (dim 64, 16 heads of 4, FFN 256, int8 QDQ), the
modelled cycles on the cluster alone and with the NPU, and the mapping the engine choice makes, in
prompt (64 tokens) and decode (1 token) shapes. Cycles come from the platform's cost model
(tvm_deeploy/targets/platforms.py: ClusterCosts, NpuCosts), not from a run. Prints a table and writes JSON.

    python scripts/bench_npu.py [--json bench_npu.json]
"""

from __future__ import annotations

import argparse
import json

import tvm_deeploy
from tvm_deeploy.models import llama_block

DIM, HEADS, FFN = 64, 16, 256


def layers(tokens: int) -> list[dict]:
    mod = llama_block(seq=tokens, dim=DIM, heads=HEADS, ffn=FFN, quantized=True)
    with_npu = tvm_deeploy.compile_report(mod, tvm_deeploy.target(npu=True))
    cluster_only = tvm_deeploy.compile_report(mod, tvm_deeploy.target(npu=False))
    rows = []
    for symbol, entry in with_npu.items():
        alone = cluster_only[symbol]
        rows.append({"op": entry["summary"], "engine": entry["engine"],
                     "cluster_cycles": alone["modelled_cycles"].get("cluster"),
                     "npu_cycles": entry["modelled_cycles"].get("npu"),
                     "chosen_cycles": entry["modelled_cycles"].get(entry["engine"])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="bench_npu.json", help="where to write the results")
    args = parser.parse_args()
    results = {}
    for mode, tokens in (("prompt", 64), ("decode", 1)):
        rows = layers(tokens)
        results[mode] = rows
        print(f"\nmicroLlama block, {mode} ({tokens} token{'s' if tokens > 1 else ''}): modelled cycles")
        print(f"  {'op':<58} {'cluster':>9} {'NPU':>9}  engine")
        for row in rows:
            npu = "-" if row["npu_cycles"] is None else row["npu_cycles"]
            print(f"  {row['op']:<58} {row['cluster_cycles'] or '-':>9} {npu:>9}  {row['engine']}")
        alone = sum(r["cluster_cycles"] or 0 for r in rows)
        mixed = sum(r["chosen_cycles"] or 0 for r in rows)
        if alone:
            print(f"  offloaded ops: cluster only {alone} cycles, cluster + NPU {mixed} ({alone / mixed:.1f}x)")
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
