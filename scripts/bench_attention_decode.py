"""The fused attention kernel at decode, on RV32 under qemu: one query token of stories260K (8 heads of 8 over
4 K/V heads) or microLlama (16 heads of 4) against a fixed-size fp32 KV cache with a run-time position mask
(0 up to the position, -inf after it), as the language model's decode step calls it, tiled by the tiler for
Siracusa with 1 and 8 cores. Per position: instructions of the slowest hart (qemu -icount, rv32imafc, gcc 12 -O2)
and DMA bytes of the call, the result checked against reference.attention_f32. Prints a table and writes JSON.

    PYTHONPATH=. python scripts/bench_attention_decode.py [--positions 16 20 24 31 100 511] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import numpy as np

from tvm_deeploy.emit.c import c_array, initializer
from tvm_deeploy.emit.kernel_args import ATTENTION_PLAN, CAUSAL, DTYPE
from tvm_deeploy.offload import reference
from tvm_deeploy.offload.specs import AttentionSpec, Operand, Strides
from tvm_deeploy.plan.tiling import tile_attention
from tvm_deeploy.targets.platforms import get_platform
from tvm_deeploy.targets.qemu import build_program, missing_tools, run_elf
from tvm_deeploy.targets.resources import resource_dir
from tvm_deeploy.targets.rv32 import WITH_FPU

MODELS = {"stories260K": (8, 4, 8, 512), "microLlama": (16, 16, 4, 256)}  # heads, kv_heads, head dim, context
LINE = re.compile(r"^position (\d+): instructions((?: \d+)+) dma (\d+) (\d+)$", re.MULTILINE)

DRIVER = """/* one decode attention call per position, each in its own profiled step */
#include <stdio.h>
#include "dpl_kernels.h"
#include "dpl_profile.h"
static uint64_t l1[{l1_words}] __attribute__((section(".l1")));
{arrays}
static float mask[{context}], out[{out}];
static const {plan_type} plan = {plan};
int main(void) {{
  static const int32_t positions[] = {{{positions}}};
  int32_t i, j, h;
  for (i = 0; i < {count}; ++i) {{
    for (j = 0; j < {context}; ++j) mask[j] = j <= positions[i] ? 0.0f : -INFINITY;
    dpl_profile_step_begin(i + 1);
    dpl_attention_tiled(&plan, (uint8_t *)l1, q, k, v, mask, out, NULL);
    dpl_profile_step_end(i + 1);
    printf("position %ld: instructions", (long)positions[i]);
    for (h = 0; h < dpl_profile_harts(); ++h) printf(" %llu", (unsigned long long)dpl_profile_instructions(i + 1, h));
    printf(" dma %llu %llu\\n", (unsigned long long)dpl_profile_dma_bytes(i + 1, 0),
           (unsigned long long)dpl_profile_dma_bytes(i + 1, 1));
    for (j = 0; j < {out}; ++j) printf("%a\\n", (double)out[j]);
  }}
  return 0;
}}
"""


def _spec(heads: int, kv_heads: int, d: int, context: int) -> AttentionSpec:
    """q [1, heads * d] read as (1, heads, 1, d); the cache [kv_heads, context, d]; the mask [1, 1, 1, context]."""
    q_strides, kv_strides = Strides(0, d, 0, 1), Strides(0, context * d, d, 1)
    return AttentionSpec(Operand((1, heads * d), "float32", 0), Operand((kv_heads, context, d), "float32", 0),
                         Operand((kv_heads, context, d), "float32", 0), Operand((1, 1, 1, context), "float32", 0),
                         q_strides, kv_strides, kv_strides, Strides(0, 0, 0, 1), q_strides, (1, heads * d), 1, heads,
                         kv_heads, 1, context, d, d, float(1 / np.sqrt(d)), "none", heads // kv_heads, "float32")


def _plan_fields(spec: AttentionSpec, t, cores: int) -> dict:
    strides = lambda s: {"batch": s.batch, "head": s.head, "seq": s.seq, "feat": s.feat}  # noqa: E731
    return {"dtype": DTYPE.values["f32"], "batch": 1, "heads": spec.heads, "kv_heads": spec.kv_heads,
            "kv_div": spec.kv_div, "q_len": 1, "kv_len": spec.kv_len, "qk_dim": spec.qk_dim, "v_dim": spec.v_dim,
            "causal": CAUSAL.values["none"], "tile_h": t.tile_h, "tile_q": t.tile_q, "tile_kv": t.tile_kv,
            "q": strides(spec.q_strides), "k": strides(spec.k_strides), "v": strides(spec.v_strides),
            "mask": strides(spec.mask_strides), "o": strides(spec.out_strides), "l1_q": t.l1_q, "l1_k": t.l1_k,
            "l1_v": t.l1_v, "l1_mask": t.l1_mask, "l1_o": t.l1_o, "l1_state": t.l1_state, "l1_scores": t.l1_scores,
            "l1_lut": t.l1_lut, "cores": cores, "scale": spec.scale}


def measure(model: str, cores: int, positions: list[int], folder: Path) -> list[dict]:
    heads, kv_heads, d, context = MODELS[model]
    spec = _spec(heads, kv_heads, d, context)
    tiling = tile_attention(spec, get_platform("siracusa").with_overrides(cores=cores, npu=False))
    rng = np.random.default_rng(0)
    q = rng.standard_normal(heads * d).astype(np.float32)
    k, v = (rng.standard_normal((kv_heads, context, d)).astype(np.float32) for _ in range(2))
    arrays = "\n".join(c_array(name, x.ravel(), "float32")
                       for name, x in (("q", q), ("k", k), ("v", v)))
    driver = folder / f"{model}_{cores}.c"
    driver.write_text(DRIVER.format(
        l1_words=-(-tiling.l1_bytes // 8), arrays=arrays, context=context, out=heads * d,
        plan_type=ATTENTION_PLAN.name, plan=initializer(ATTENTION_PLAN, _plan_fields(spec, tiling, cores)),
        positions=", ".join(map(str, positions)), count=len(positions)))
    elf = build_program([driver, resource_dir("c_kernels") / "attention_tiled.c"], folder / f"{model}_{cores}.elf",
                        harts=cores, isa=WITH_FPU,
                        flags=("-ffp-contract=off", "-DDPL_PROFILE", f"-DDPL_PROFILE_STEPS={len(positions)}"))
    code, output = run_elf(elf, cores)
    found = list(LINE.finditer(output))
    if code != 0 or len(found) != len(positions):
        raise SystemExit(f"{model} on {cores} cores failed (exit code {code}):\n{output[-2000:]}")
    values = output.split("\n")
    rows = []
    for match, position in zip(found, positions):
        start = values.index(match.group(0)) + 1
        got = np.array([float.fromhex(x) for x in values[start:start + heads * d]], np.float32)
        mask = np.where(np.arange(context) <= position, 0.0, -np.inf).astype(np.float32)
        want = reference.attention_f32(q.reshape(1, heads, 1, d), k[None], v[None], spec.scale,
                                       mask.reshape(1, 1, 1, context), "none", kv_heads).ravel()
        per_hart = [int(x) for x in match.group(2).split()]
        rows.append({"model": model, "cores": cores, "isa": WITH_FPU.march, "position": position,
                     "tile": [tiling.tile_h, tiling.tile_q, tiling.tile_kv],
                     "slowest_hart_instructions": max(per_hart), "instructions_per_hart": per_hart,
                     "dma_to_l1": int(match.group(3)), "dma_to_l2": int(match.group(4)),
                     "max_relative_error": float(np.abs(got - want).max() / np.abs(want).max())})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, nargs="+", default=[16, 20, 24, 31, 100, 255])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--json", default="bench_attention_decode.json", help="where to write the results")
    args = parser.parse_args()
    if missing_tools():
        parser.error(f"missing {', '.join(missing_tools())}: run scripts/setup.sh")
    rows = []
    print(f"{'model':<12} {'cores':>5} {'tile h/q/kv':<12} {'position':>8} {'instructions':>12} {'DMA in':>7} "
          f"{'DMA out':>7}  error")
    with tempfile.TemporaryDirectory(prefix="bench-attention-decode-") as tmp:
        for model in args.models:
            positions = [p for p in args.positions if p < MODELS[model][3]]
            for cores in args.cores:
                for r in measure(model, cores, positions, Path(tmp)):
                    rows.append(r)
                    print(f"{model:<12} {cores:>5} {'x'.join(map(str, r['tile'])):<12} {r['position']:>8} "
                          f"{r['slowest_hart_instructions']:>12,} {r['dma_to_l1']:>7,} {r['dma_to_l2']:>7,}  "
                          f"{r['max_relative_error']:.1e}", flush=True)
    Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0 if all(r["max_relative_error"] < 1e-5 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
