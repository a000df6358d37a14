"""Tiler benchmark: the GEMMs and matmuls of a microLlama-sized model (dim 64, FFN 256, 8 layers,
16 heads of 4) in prompt (64 tokens) and decode (1 token, 256 cached) modes, tiled for Siracusa at
several L1 sizes. Prints solver seconds, tiles and DMA bytes against the lower bound; writes JSON.

    python scripts/bench_tiler.py [--json bench_tiler.json]
"""

from __future__ import annotations

import argparse
import json
import time

from tvm_deeploy.offload.specs import GemmSpec, Operand
from tvm_deeploy.plan.tiling import tile_gemm
from tvm_deeploy.targets.platforms import KIB, get_platform

DIM, FFN, LAYERS, HEADS, HEAD_DIM = 64, 256, 8, 16, 4


def gemm(name, m, n, k, batch=(), b_transposed=False):
    """An int8 GEMM as the QDQ layers and int8 attention matmuls of the model give it."""
    batch_count = 1
    for d in batch:
        batch_count *= d
    strides = tuple(m * k * (batch_count // d if i == 0 else 1) for i, d in enumerate(batch))
    b_strides = tuple(k * n * (batch_count // d if i == 0 else 1) for i, d in enumerate(batch))
    a = Operand(batch + (m, k), "int8", param=0)
    b = Operand(batch + ((n, k) if b_transposed else (k, n)), "int8", param=1)
    return name, GemmSpec("int8", "int8", batch, m, n, k, a, b, b_transposed, strides, b_strides)


def layer_ops(tokens: int, context: int):
    return [
        gemm("q/k/v/o projection", tokens, DIM, DIM),
        gemm("q/k/v/o projection", tokens, DIM, DIM),
        gemm("q/k/v/o projection", tokens, DIM, DIM),
        gemm("q/k/v/o projection", tokens, DIM, DIM),
        gemm("ffn gate", tokens, FFN, DIM),
        gemm("ffn up", tokens, FFN, DIM),
        gemm("ffn down", tokens, DIM, FFN),
        gemm("attention Q K^T (per head)", tokens, context, HEAD_DIM, batch=(HEADS,), b_transposed=True),
        gemm("attention P V (per head)", tokens, HEAD_DIM, context, batch=(HEADS,)),
    ]


def run(l1_kib: int, mode: str, tokens: int, context: int) -> dict:
    platform = get_platform("siracusa").with_overrides(l1_bytes=l1_kib * KIB)
    rows, total_seconds = [], 0.0
    for _ in range(LAYERS):
        for name, spec in layer_ops(tokens, context):
            start = time.perf_counter()
            plan = tile_gemm(spec, platform)
            total_seconds += time.perf_counter() - start
            rows.append({"op": name, "m": spec.m, "n": spec.n, "k": spec.k, "batch": list(spec.batch),
                         "tile": [plan.tile_m, plan.tile_n], "tiles": plan.tiles, "l1_bytes": plan.l1_bytes,
                         "dma_bytes": plan.dma_in_bytes + plan.dma_out_bytes,
                         "dma_lower_bound": plan.dma_lower_bound, "solver_seconds": plan.solver_seconds,
                         "solver_status": plan.solver_status})
    dma = sum(r["dma_bytes"] for r in rows)
    bound = sum(r["dma_lower_bound"] for r in rows)
    return {"l1_kib": l1_kib, "mode": mode, "ops": rows, "total_solver_seconds": total_seconds,
            "max_solver_seconds": max(r["solver_seconds"] for r in rows), "total_tiles": sum(r["tiles"] for r in rows),
            "dma_bytes": dma, "dma_lower_bound": bound, "dma_ratio": dma / bound}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="bench_tiler.json", help="where to write the results")
    args = parser.parse_args()
    results = []
    print(f"{'L1':>7} {'mode':<7} {'ops':>4} {'tiles':>6} {'DMA bytes':>10} {'lower bound':>11} {'ratio':>6} "
          f"{'solver s':>9} {'max/op s':>9}")
    for l1_kib in (8, 32, 256):
        for mode, tokens, context in (("prompt", 64, 64), ("decode", 1, 256)):
            r = run(l1_kib, mode, tokens, context)
            results.append(r)
            print(f"{l1_kib:>5}Ki {mode:<7} {len(r['ops']):>4} {r['total_tiles']:>6} {r['dma_bytes']:>10} "
                  f"{r['dma_lower_bound']:>11} {r['dma_ratio']:>6.2f} {r['total_solver_seconds']:>9.3f} "
                  f"{r['max_solver_seconds']:>9.3f}")
    worst = {}
    for r in results:
        for op in r["ops"]:
            key = (r["l1_kib"], r["mode"], op["op"])
            worst[key] = op
    print("\nper op (one layer):")
    for (l1_kib, mode, name), op in sorted(worst.items()):
        print(f"  {l1_kib:>3} KiB {mode:<7} {name:<28} {op['m']:>3}x{op['n']:>3}x{op['k']:>3} batch {op['batch'] or '-'!s:<5}"
              f" tile {op['tile'][0]:>3}x{op['tile'][1]:<3} tiles {op['tiles']:>4} DMA/bound "
              f"{op['dma_bytes'] / op['dma_lower_bound']:.2f}")
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
