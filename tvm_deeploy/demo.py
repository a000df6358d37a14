"""`tvm-deeploy demo`: build a transformer block and an int8 MLP for deeploy, run them on this host,
and check them against TVM's own llvm build of the same modules."""

from __future__ import annotations

import collections
import tempfile
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from . import models
from .partition import partition_for_deeploy
from .report import compile_report
from .target import platform_of

FP32_RTOL = 1e-5


def _build_and_run(mod, target: str, x: np.ndarray, folder: Path) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    ex = tvm.relax.build(mod, target=target)
    path = folder / f"{target}.so"
    ex.export_library(str(path))
    seconds = time.perf_counter() - start
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy(), seconds


def _kept_in_tvm(partitioned) -> str:
    counts = collections.Counter()
    for block in partitioned["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                counts[value.op.name.removeprefix("relax.")] += 1
    return ", ".join(f"{name} x{count}" for name, count in sorted(counts.items())) or "nothing"


def _report_partition(mod, out) -> None:
    target = tvm.target.Target("deeploy")
    platform = platform_of(target)
    report = compile_report(mod, target)
    out(f"  offloaded to deeploy ({len(report)} functions), for {platform.name} (L1 {platform.l1_bytes // 1024} "
        f"KiB, {platform.cores} cores{', NPU' if platform.npu else ''}):")
    for entry in report.values():
        if entry["tile"] is None:
            where = "untiled"
        else:
            tiles = f"{entry['tiles']} tile{'s' if entry['tiles'] > 1 else ''} of {entry['tile'][0]}x{entry['tile'][1]}"
            where = f"{tiles}, {entry['l1_bytes']} B of L1"
        out(f"    {entry['summary']:<66} {entry['engine']:<8} {where}")
    out(f"  kept in TVM: {_kept_in_tvm(partition_for_deeploy(mod))}")


def _run_case(title, mod, x, folder, compare, out) -> bool:
    out(title)
    _report_partition(mod, out)
    ours, seconds = _build_and_run(mod, "deeploy", x, folder)
    theirs, _ = _build_and_run(mod, "llvm", x, folder)
    out(f"  built for deeploy in {seconds:.1f} s and ran on this host")
    ok, verdict = compare(ours, theirs)
    out(f"  {verdict}: {'MATCH' if ok else 'MISMATCH'}")
    return ok


def _compare_fp32(ours, theirs):
    diff = float(np.abs(ours - theirs).max())
    scale = float(np.abs(theirs).max())
    ok = diff <= FP32_RTOL * scale
    return ok, f"max |deeploy - TVM llvm| = {diff:.3g} ({diff / scale:.3g} of max |output|, tolerance {FP32_RTOL:g})"


def _compare_int8(ours, theirs):
    diff = np.abs(ours.astype(np.int32) - theirs.astype(np.int32))
    # Each QDQ layer is within 1 LSB of TVM's float definition; two chained layers within 2.
    ok = int(diff.max()) <= 2
    return ok, (f"max |deeploy - TVM llvm| = {int(diff.max())} LSB, {float((diff > 0).mean()):.2%} of "
                f"{diff.size} outputs differ (integer-only kernels vs TVM's float QDQ)")


def run_demo(out=print) -> int:
    """Run the demo, printing to `out`; 0 when every result matches TVM's build, else 1."""
    rng = np.random.default_rng(0)
    seq, dim, heads, ffn = 16, 32, 4, 64
    with tempfile.TemporaryDirectory(prefix="tvm-deeploy-demo-") as tmp:
        folder = Path(tmp)
        fp32_dir, int8_dir = folder / "fp32", folder / "int8"
        fp32_dir.mkdir()
        int8_dir.mkdir()
        ok = _run_case(f"Transformer block, fp32 (seq {seq}, dim {dim}, {heads} heads, FFN {ffn}, causal):",
                       models.transformer_block(seq, dim, heads, ffn), rng.standard_normal((seq, dim)).astype("float32"),
                       fp32_dir, _compare_fp32, out)
        out("")
        ok &= _run_case("Two int8 QDQ linear layers (16 tokens, 64 -> 128 -> 64):", models.int8_mlp(),
                        rng.integers(-128, 128, (16, 64)).astype("int8"), int8_dir, _compare_int8, out)
    out("")
    out("demo: all results match TVM's own build" if ok else "demo: MISMATCH against TVM's own build")
    return 0 if ok else 1
