"""The kernels' libm-free exp (c_kernels/dpl_math.h's dpl_expf): bit-exact against its NumPy form
`reference.expf` on this host (gcc and clang) and on rv32imafc under qemu, its stated error against exp in
float64, its edge cases, and no compiler we build with fusing its multiply-adds."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest
from conftest import C_FLAGS, KERNEL_DIR, run_checked

from tvm_deeploy.offload import reference
from tvm_deeploy.targets import qemu
from tvm_deeploy.targets.rv32 import CROSS_COMPILER, TOOLCHAIN_FLAGS, WITH_FPU

F32 = np.float32
STATED_ERROR = 9.531e-8  # dpl_math.h's header and README: the full sweep's 9.5304e-8, rounded up

EDGES = np.array([0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, 1e-30, 0.5 * np.log(2), -0.5 * np.log(2), 86.99999, 87.0,
                  -87.0, 88.0, 88.72283, 88.72284, 88.7229, 89.0, 89.00001, 200.0, -87.33654, -87.4, -100.0, -103.9,
                  -103.97, -103.98, -104.0, -104.00001, -300.0, 3.4e38, -3.4e38, np.inf, -np.inf, np.nan], F32)

DRIVER = """
#include <stdint.h>
#include "dpl_math.h"
void expf_array(const float *x, float *y, int32_t n) {
  int32_t i;
  for (i = 0; i < n; ++i) y[i] = dpl_expf(x[i]);
}
"""


def _samples(count: int, seed: int) -> np.ndarray:
    """The edge cases, random bit patterns (every float32 class) and random values where exp is finite."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, count, dtype=np.uint64).astype(np.uint32).view(F32)
    useful = rng.uniform(-104.5, 89.5, count).astype(F32)
    small = (rng.standard_normal(count) * 4).astype(F32)
    return np.concatenate([EDGES, bits, useful, small])


def _library(folder, compiler: str) -> ctypes.CDLL:
    source = folder / "expf_driver.c"
    source.write_text(DRIVER)
    library = folder / f"libexpf_{compiler}.so"
    run_checked([compiler, *C_FLAGS, "-fPIC", "-shared", "-I", KERNEL_DIR, source, "-o", library])
    lib = ctypes.CDLL(str(library))
    lib.expf_array.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]
    return lib


@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_c_matches_the_numpy_emulation_bit_for_bit(build_dir, compiler):
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not available")
    lib = _library(build_dir, compiler)
    x = _samples(1 << 18, seed=7)
    y = np.empty_like(x)
    lib.expf_array(x.ctypes.data, y.ctypes.data, x.size)
    np.testing.assert_array_equal(y.view(np.uint32), reference.expf(x).view(np.uint32))


HOST_FMA = ["-std=c99", "-march=haswell"]
RV32_FMA = ["-std=c99", "-march=rv32imafc", "-mabi=ilp32f"]
# the project Makefile's clang for RV32 (codegen/project_Makefile.tmpl's RV32_CLANG)
RV32_CLANG = ["--target=riscv32-unknown-elf", "-isystem", "/usr/lib/picolibc/riscv64-unknown-elf/include"]


@pytest.mark.parametrize("compiler,flags", [("gcc", HOST_FMA), ("clang", HOST_FMA), ("clang", RV32_CLANG + RV32_FMA),
                                            (CROSS_COMPILER, RV32_FMA + list(TOOLCHAIN_FLAGS))],
                         ids=["gcc", "clang", "clang-rv32", "gcc-rv32"])
def test_no_fused_multiply_add(build_dir, compiler, flags):
    """Targets with fused multiply-add: the compiled exp has none (gcc's -std=c99 turns contraction off,
    dpl_math.h's pragma turns it off for clang)."""
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not available")
    source = build_dir / "expf_driver.c"
    source.write_text(DRIVER)
    assembly = subprocess.run([compiler, *flags, "-O2", "-S", "-o", "-", "-I", str(KERNEL_DIR), str(source)],
                              capture_output=True, text=True, check=True).stdout
    assert "fmadd" not in assembly and "fmsub" not in assembly and "fnmadd" not in assembly


def test_edge_cases():
    y = reference.expf(np.array([np.inf, -np.inf, np.nan, 89.0, 88.7229, 88.72283, -104.00001, -103.0, 0.0], F32))
    assert y[0] == np.inf and y[1] == 0.0 and np.isnan(y[2]) and y[3] == np.inf and y[4] == np.inf
    assert np.isfinite(y[5]) and y[6] == 0.0 and 0.0 < y[7] < np.finfo(F32).tiny and y[8] == 1.0
    # subnormal results: within one subnormal step of the exact value
    x = np.linspace(-103.9, -87.4, 5001, dtype=F32)
    step = np.finfo(F32).smallest_subnormal
    assert np.abs(reference.expf(x).astype(np.float64) - np.exp(x.astype(np.float64))).max() <= step


def test_stated_relative_error():
    """Every 997th float32 whose exp is a normal float32 (the full sweep: scripts/measure_expf.py)."""
    tiny, huge = np.finfo(F32).tiny, np.finfo(F32).max
    worst = 0.0
    for sign, bound in ((1.0, 89.0), (-1.0, 104.0)):
        last = int(np.array([bound], F32).view(np.uint32)[0])
        x = np.arange(0, last + 1, 997, dtype=np.uint32).view(F32) * F32(sign)
        exact = np.exp(x.astype(np.float64))
        normal = (exact >= tiny) & (exact <= huge)
        worst = max(worst, float((np.abs(reference.expf(x[normal]) - exact[normal]) / exact[normal]).max()))
    assert 5e-8 < worst <= STATED_ERROR


RV32_DRIVER = """
#include <stdint.h>
#include <stdio.h>
#include "dpl_math.h"
#include "expf_vectors.h"
int main(void) {
  int32_t i, errors = 0;
  for (i = 0; i < N; ++i) {
    union { float f; uint32_t u; } y;
    y.f = dpl_expf(X[i].f);
    errors += y.u != Y[i];
  }
  printf("expf: %ld errors\\n", (long)errors);
  return errors != 0;
}
"""


@pytest.mark.rv32
def test_rv32imafc_matches_the_numpy_emulation(tmp_path):
    x = _samples(1500, seed=11)
    bits = x.view(np.uint32)
    vectors = ("#define N %d\nstatic const union { uint32_t u; float f; } X[N] = {%s};\n"
               "static const uint32_t Y[N] = {%s};\n") % (
        x.size, ",".join(f"{{{b}u}}" for b in bits), ",".join(f"{b}u" for b in reference.expf(x).view(np.uint32)))
    (tmp_path / "expf_vectors.h").write_text(vectors)
    (tmp_path / "expf_rv32.c").write_text(RV32_DRIVER)
    elf = qemu.build_program([tmp_path / "expf_rv32.c"], tmp_path / "expf.elf", isa=WITH_FPU,
                             flags=(f"-I{tmp_path}", "-DDPL_PROFILE_STEPS=1"))
    code, output = qemu.run_elf(elf, 1, timeout=60)
    assert code == 0 and "expf: 0 errors" in output, output
