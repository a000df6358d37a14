"""Instructions per MAC of the int8 GEMM kernels (c_kernels/gemm_s8.c, gemm_lanes.c) on RV32 under qemu.

    count = gemm_s8_count(64, 256, 64)     # one call on one hart, checked against reference.gemm_s8
    count.per_mac                          # instructions / (m * n * k)
    gemm_s8_count(1, 64, 64, lanes=True)   # dpl_gemm_s8_lanes with B packed in lane words (plan/lanes.py)

The driver (codegen/gemm_s8_count.c.tmpl) is built with the bare-metal HAL for rv32imc at -O2, like the
kernels of an exported project.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..emit.c import C_TYPES, c_array, c_items, initializer, render
from ..emit.kernel_args import REQUANT, REQUANT_MODE
from ..offload import reference
from ..plan.lanes import lanes_chunk, pack_lanes
from .qemu import QemuError, build_program, run_elf
from .resources import resource_dir


@dataclass(frozen=True)
class GemmCount:
    m: int
    n: int
    k: int
    instructions: int
    errors: int

    @property
    def per_mac(self) -> float:
        return self.instructions / (self.m * self.n * self.k)


def _driver(m, n, k, a_zp, b_zp, transposed, requantize, lanes, seed) -> str:
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    vectors, rq, out_type = "", "NULL", "int32_t"
    if requantize:
        bias = rng.integers(-5000, 5000, n).astype(np.int32)
        mul, shift = reference.quantize_multiplier(rng.uniform(1e-4, 1e-3, n))
        spec = reference.Requant("fixed", bias=bias, mul=mul, shift=shift, out_zp=3)
        arrays = {"bias": bias, "mul": mul, "shift": shift}
        fields = {"mode": REQUANT_MODE[spec.mode], "add": None, "out_zp": spec.out_zp, "lo": spec.lo, "hi": spec.hi,
                  **{name: f"rq_{name}" for name in arrays}}
        vectors = "\n".join([*(c_array(f"rq_{name}", values, "int32") for name, values in arrays.items()),
                             f"static const {REQUANT.name} rq = {initializer(REQUANT, fields)};"])
        rq, out_type = "&rq", "int8_t"
    expected = reference.gemm_s8(a, b, a_zp=a_zp, b_zp=b_zp, requant=spec if requantize else None)
    if lanes:
        stored_b, b_type = pack_lanes(b, False), "uint32"
        call = f"dpl_gemm_s8_lanes(a, {k}, b, {lanes_chunk(b, False)}, y, {n}, {m}, {n}, {k}, {b_zp}, {rq})"
    else:
        stored_b, b_type = (np.ascontiguousarray(b.T) if transposed else b), "int8"
        call = f"dpl_gemm_s8(a, {k}, b, {k if transposed else n}, {int(transposed)}, y, {n}, {m}, {n}, {k}, {a_zp}, " \
               f"{b_zp}, {rq})"
    return render(
        "gemm_s8_count.c.tmpl", a_size=a.size, b_size=stored_b.size, y_size=m * n, out_type=out_type,
        a=c_items(a, "int8"), b_type=C_TYPES[b_type], b=c_items(stored_b, b_type),
        expected=c_items(expected, str(expected.dtype)), requant_vectors=vectors, call=call)


def gemm_s8_count(m: int, n: int, k: int, a_zp: int = 0, b_zp: int = 0, transposed: bool = False,
                  requantize: bool = False, lanes: bool = False, seed: int = 0, timeout: float = 120.0) -> GemmCount:
    """Instructions of one dpl_gemm_s8 call (A[m, k] x B[k, n], B stored [n, k] when transposed; int32 out,
    or int8 through a fixed-point requantization), and the elements that differ from the reference; with
    `lanes`, one dpl_gemm_s8_lanes call (B packed in lane words; no a_zp, not transposed)."""
    if lanes and (a_zp or transposed):
        raise ValueError("dpl_gemm_s8_lanes takes no activation zero point and B packed from [k, n]")
    with tempfile.TemporaryDirectory(prefix="tvm-deeploy-gemm-") as tmp:
        driver = Path(tmp) / "gemm_s8_count.c"
        driver.write_text(_driver(m, n, k, a_zp, b_zp, transposed, requantize, lanes, seed))
        kernels = resource_dir("c_kernels")
        elf = build_program([driver, kernels / "gemm_s8.c", kernels / "gemm_lanes.c"], Path(tmp) / "gemm.elf")
        code, output = run_elf(elf, 1, timeout)
    words = output.split()
    if len(words) < 4 or words[0] != "instructions":
        raise QemuError(f"the GEMM driver failed (exit code {code}):\n{output}")
    return GemmCount(m, n, k, int(words[1]), int(words[3]))
