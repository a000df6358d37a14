"""Attention benchmark: the fused, tiled attention kernel on the shapes it is built for (microLlama prompt
and KV-cache decode, stories260K prompt and decode, 512-token prompts in a 64 KiB L1), fp32 and int8.

For each shape: the tiles the tiler chose (heads x queries x keys), row tiles and steps, L1 bytes, DMA
bytes against the lower bound (predicted, and as the host HAL counted them at run time), and the host
run time of `relax.build(target=deeploy)` against TVM's llvm build of the same graph (the VM calling
`main`, median of repeated runs; the deeploy module compiled with -O2, its 8 cluster cores emulated
with threads on this host; also with 1 core). Then the integer softmax's error against float
attention. Prints a table and writes JSON.

    PYTHONPATH=. python scripts/bench_attention.py [--json bench_attention.json] [--repeat 30]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

import tvm_deeploy
from tvm_deeploy import models
from tvm_deeploy.offload import accuracy
from tvm_deeploy.targets.platforms import KIB

MICRO_LLAMA = dict(heads=16, kv_heads=16, head_dim=4)
STORIES_260K = dict(heads=8, kv_heads=4, head_dim=8)

# name, model, new tokens, cached tokens, L1 KiB
SHAPES = [
    ("microLlama prompt S=64", MICRO_LLAMA, 64, 0, 256),
    ("microLlama decode L=1", MICRO_LLAMA, 1, 0, 256),
    ("microLlama decode L=64", MICRO_LLAMA, 1, 63, 256),
    ("microLlama decode L=256", MICRO_LLAMA, 1, 255, 256),
    ("stories260K prompt S=64", STORIES_260K, 64, 0, 256),
    ("stories260K decode L=128", STORIES_260K, 1, 127, 256),
    ("stories260K decode L=512", STORIES_260K, 1, 511, 256),
    ("stories260K prompt S=512 @64KiB", STORIES_260K, 512, 0, 64),
    ("2x16 prompt S=512 @64KiB", dict(heads=2, kv_heads=2, head_dim=16), 512, 0, 64),
]


def inputs(rng, model, tokens, cache, quantized):
    def make(*shape):
        return (rng.integers(-128, 128, shape).astype("int8") if quantized
                else rng.standard_normal(shape).astype("float32"))

    h, kvh, d = model["heads"], model["kv_heads"], model["head_dim"]
    arrays = [make(1, tokens, h * d), make(1, tokens, kvh * d), make(1, tokens, kvh * d)]
    if cache:
        arrays += [make(1, kvh, cache, d), make(1, kvh, cache, d)]
    return [tvm.runtime.tensor(a) for a in arrays]


def load(mod, target, folder: Path, name: str):
    ex = tvm.relax.build(mod, target=target)
    path = folder / f"{name}.so"
    ex.export_library(str(path), options=["-O2"])
    return relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu()), path


def timed(vm, args, repeat):
    vm["main"](*args)  # warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        vm["main"](*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def first(out):
    return out.numpy() if isinstance(out, tvm.runtime.Tensor) else out[0].numpy()


def run_shape(name, model, tokens, cache, l1_kib, quantized, folder, repeat):
    mod = models.attention_layer(**model, tokens=tokens, cache=cache, quantized=quantized)
    target = tvm_deeploy.target(l1_bytes=l1_kib * KIB)
    (entry,) = tvm_deeploy.compile_report(mod, target).values()
    args = inputs(np.random.default_rng(0), model, tokens, cache, quantized)
    tag = f"{abs(hash((name, quantized)))}"
    ours, path = load(mod, target, folder, f"deeploy_{tag}")
    one_core, _ = load(mod, tvm_deeploy.target(l1_bytes=l1_kib * KIB, cores=1), folder, f"deeploy1_{tag}")
    llvm, _ = load(mod, "llvm", folder, f"llvm_{tag}")
    hal = ctypes.CDLL(str(path))  # the same loaded library: its DMA counters
    hal.dpl_dma_bytes.restype = ctypes.c_uint64
    hal.dpl_dma_bytes.argtypes = [ctypes.c_int32]
    hal.dpl_dma_reset_counters()
    a, b = first(ours["main"](*args)), first(llvm["main"](*args))
    measured = int(hal.dpl_dma_bytes(0) + hal.dpl_dma_bytes(1))
    if quantized:
        difference = f"{int(np.abs(a.astype(np.int32) - b).max())} LSB"
    else:
        difference = f"{float(np.abs(a - b).max() / np.abs(b).max()):.1e} rel"
    t_ours, t_one, t_llvm = timed(ours, args, repeat), timed(one_core, args, repeat), timed(llvm, args, repeat)
    dma = entry["dma_in_bytes"] + entry["dma_out_bytes"]
    return {
        "shape": name, "dtype": "int8" if quantized else "float32", "summary": entry["summary"],
        "l1_capacity": l1_kib * KIB, "tile": entry["tile"], "row_tiles": entry["tiles"], "steps": entry["steps"],
        "single_buffered": entry["single_buffered"], "l1_bytes": entry["l1_bytes"], "dma_bytes": dma,
        "dma_measured": measured, "dma_lower_bound": entry["dma_lower_bound"],
        "dma_ratio": dma / entry["dma_lower_bound"], "solver_status": entry["solver_status"],
        "host_us_deeploy_8_cores": t_ours * 1e6,
        "host_us_deeploy_1_core": t_one * 1e6, "host_us_tvm_llvm": t_llvm * 1e6, "max_difference_vs_llvm": difference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="bench_attention.json", help="where to write the results")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per build (median)")
    args = parser.parse_args()
    rows = []
    header = (f"{'shape':<32} {'dtype':<7} {'tile h/q/kv':<13} {'rows':>4} {'steps':>5} {'L1 B':>6} "
              f"{'DMA B':>8} {'bound':>8} {'ratio':>5} {'us 8c':>7} {'us 1c':>7} {'us llvm':>7}  vs llvm")
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, tokens, cache, l1_kib in SHAPES:
            for quantized in (False, True):
                r = run_shape(name, model, tokens, cache, l1_kib, quantized, Path(tmp), args.repeat)
                assert r["dma_measured"] == r["dma_bytes"], r
                rows.append(r)
                print(f"{name:<32} {r['dtype']:<7} {'x'.join(map(str, r['tile'])):<13} {r['row_tiles']:>4} "
                      f"{r['steps']:>5} {r['l1_bytes']:>6} {r['dma_bytes']:>8} {r['dma_lower_bound']:>8} "
                      f"{r['dma_ratio']:>5.2f} {r['host_us_deeploy_8_cores']:>7.0f} {r['host_us_deeploy_1_core']:>7.0f} "
                      f"{r['host_us_tvm_llvm']:>7.0f}  {r['max_difference_vs_llvm']}")
    print("\nint8 integer softmax against float attention of the same int8 inputs (output LSB):")
    errors = []
    for f in accuracy.study():
        errors.append(f.__dict__)
        print(f"  {f.kind:<6} heads {f.shape[0]:>2} q {f.shape[1]:>3} kv {f.shape[2]:>3} d {f.shape[3]} "
              f"{f.causal:<9} max {f.max_lsb} LSB, mean {f.mean_lsb:.4f} LSB ({f.differing:.2%} differ); "
              f"unrounded max {f.max_real_lsb:.3f} mean {f.mean_real_lsb:.3f}; mean peak weight {f.peak_weight:.2f}")
    with open(args.json, "w") as out:
        json.dump({"shapes": rows, "softmax_error": errors}, out, indent=1, default=list)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
