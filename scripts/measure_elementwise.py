"""Instructions per element of the element-wise kernels (residual_add, quantize, swiglu, rms_norm, rope, softmax) on
one RV32 hart under qemu -icount (rv32imafc, gcc -O2): each variant runs on a small and a large input, and the
difference over the added elements is its cost per element, without the fork's. These are the figures of
`platforms.ClusterCosts.elementwise_milli_cycles` (1 instruction taken as 1 cycle). Prints them and writes
build/measure_elementwise.json.

    python scripts/measure_elementwise.py
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from tvm_deeploy.targets import qemu
from tvm_deeploy.targets.resources import resource_dir
from tvm_deeploy.targets.rv32 import WITH_FPU

SMALL, LARGE = 256, 1280  # elements; multiples of the row lengths below
COLS, HALF = 64, 4  # RMSNorm row, rotary embedding pairs per row

# name: a C statement over n elements (buffers of LARGE elements, quantizations q, table silu, cores 1)
CALLS = {
    "residual_add": "dpl_residual_add(fa, fb, NULL, fy, n, 1);",
    "residual_add_dq": "dpl_residual_add(fa, b8, &q, fy, n, 1);",
    "quantize": "dpl_quantize(fa, &q, y8, n, 1);",
    "swiglu": "dpl_swiglu(fa, NULL, fb, NULL, fy, NULL, n, 1);",
    "swiglu_table": "dpl_swiglu(a8, silu, fb, NULL, fy, NULL, n, 1);",
    "rms_norm": f"dpl_rms_norm(fa, fb, fy, NULL, n / {COLS}, {COLS}, 1e-5f, 1);",
    "rms_norm_q": f"dpl_rms_norm(fa, fb, y8, &q, n / {COLS}, {COLS}, 1e-5f, 1);",
    "rms_norm_row": "dpl_rms_norm(fa, fb, fy, NULL, 1, n, 1e-5f, cores);",
    "rope": f"dpl_rope(fa, NULL, fb, fb, {HALF}, fy, n / {2 * HALF}, 1, {HALF}, 1);",
    "rope_dq": f"dpl_rope(a8, &q, fb, fb, {HALF}, fy, n / {2 * HALF}, 1, {HALF}, 1);",
    "softmax": f"dpl_softmax_f32(fa, fy, n / {COLS}, {COLS}, 1);",
}

DRIVER = """#include <stdio.h>
#include "dpl_kernels.h"
#include "dpl_profile.h"
#define LARGE %(large)d
static float fa[LARGE], fb[LARGE], fy[LARGE], silu[256];
static int8_t a8[LARGE], b8[LARGE], y8[LARGE];
int main(void) {
  const dpl_quant_t q = {0.05f, 3};
  const int32_t cores = DPL_RV32_HARTS;
  int32_t i, n, step = 0;
  for (i = 0; i < LARGE; ++i) {
    fa[i] = (float)(i %% 17) * 0.25f - 2.0f;
    fb[i] = (float)(i %% 13) * 0.125f - 0.75f;
    a8[i] = (int8_t)(i %% 251 - 125);
    b8[i] = (int8_t)(i %% 241 - 120);
  }
  for (i = 0; i < 256; ++i) silu[i] = (float)i * 0.01f;
  (void)cores;
%(steps)s
  for (i = 1; i <= step; ++i) {
    int32_t hart;
    printf("step %%ld:", (long)i);
    for (hart = 0; hart < dpl_profile_harts(); ++hart) {
      printf(" %%lu", (unsigned long)dpl_profile_instructions(i, hart));
    }
    printf("\\n");
  }
  return 0;
}
"""

STEP = """  for (n = %(small)d; n <= LARGE; n += LARGE - %(small)d) {
    dpl_profile_step_begin(++step);
    %(call)s
    dpl_profile_step_end(step);
  }
"""


def _counts(harts: int, folder: Path) -> list[list[int]]:
    steps = "".join(STEP % {"small": SMALL, "call": call} for call in CALLS.values())
    source = folder / "elementwise.c"
    source.write_text(DRIVER % {"large": LARGE, "steps": steps})
    kernels = resource_dir("c_kernels")
    names = ("residual_add", "quantize", "swiglu", "rms_norm", "rope", "softmax_f32")
    sources = [source] + [kernels / f"{name}.c" for name in names]
    elf = qemu.build_program(sources, folder / f"elementwise{harts}.elf", harts=harts, isa=WITH_FPU,
                             flags=("-DDPL_PROFILE", f"-DDPL_PROFILE_STEPS={2 * len(CALLS)}"))
    code, output = qemu.run_elf(elf, harts, timeout=120)
    if code != 0:
        raise SystemExit(f"the driver failed:\n{output}")
    found = re.findall(r"^step (\d+):((?: \d+)+)$", output, re.M)
    return [[int(c) for c in counts.split()] for _, counts in found]


def measure() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        one, two = _counts(1, Path(tmp)), _counts(2, Path(tmp))
    added = LARGE - SMALL

    def per_element(counts, name, hart=0):
        index = 2 * list(CALLS).index(name)
        return (counts[index + 1][hart] - counts[index][hart]) * 1000 // added

    row_one = per_element(one, "rms_norm_row")  # one row on 1 hart: sum + scale of every column
    row_two = max(per_element(two, "rms_norm_row", hart) for hart in (0, 1))  # sum of all, scale of half
    scale = 2 * (row_one - row_two)
    measured = {name: per_element(one, name) for name in CALLS if name != "rms_norm_row"}
    dequantize = measured["residual_add_dq"] - measured["residual_add"]
    quantize = measured["rms_norm_q"] - measured["rms_norm"]
    return {
        "instructions_per_element_x1000": measured,
        "elementwise_milli_cycles": {
            "residual_add": measured["residual_add"], "rms_norm": measured["rms_norm"],
            "rms_norm_sum": row_one - scale, "rms_norm_scale": scale, "swiglu": measured["swiglu"],
            "swiglu_table": measured["swiglu_table"], "rope": measured["rope"],
            "quantize": measured["quantize"] - quantize, "softmax": measured["softmax"]},
        "dequantize_milli_cycles": dequantize, "quantize_milli_cycles": quantize,
        "rope_dequantize_milli_cycles": measured["rope_dq"] - measured["rope"],
    }


def main() -> None:
    result = measure()
    for key, value in result.items():
        print(f"{key}: {value}")
    out = Path("build") / "measure_elementwise.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
