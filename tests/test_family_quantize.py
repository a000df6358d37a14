"""The quantize family: kernel against the NumPy reference (bit-exact; on this host and, for the rounding
instruction of cores with F, under qemu), the pattern (only a quantize that no kernel before it folded in), and
the offloaded build against TVM's llvm build (within 1 LSB)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_and_run, offloaded
from family_kernels import (
    assert_bits_equal,
    function,
    kernel_library,
    pointer,
    quant_pointer,
    quantize,
    quantized_input,
    quants,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax

from tvm_deeploy.offload import reference
from tvm_deeploy.targets import qemu
from tvm_deeploy.targets.rv32 import WITH_FPU


@pytest.fixture(scope="module")
def lib(build_dir):
    return kernel_library(build_dir)


@settings(max_examples=30)
@given(n=st.integers(1, 300), cores=st.integers(1, 8), quant=quants, seed=st.integers(0, 2**16))
def test_kernel_is_bit_exact(lib, n, cores, quant, seed):
    rng = np.random.default_rng(seed)
    x = quantized_input(rng, n, None, scale=3.0)
    x[: n // 4] = np.round(x[: n // 4] / np.float32(quant.scale) * 2) / 2 * np.float32(quant.scale)  # near ties
    y = np.zeros(n, np.int8)
    lib.dpl_quantize(pointer(x), quant_pointer(quant), pointer(y), n, cores)
    assert_bits_equal(y, reference.quantize_s8(x, quant))


QUANT = reference.Quant(0.03, -2)


def test_offloaded_equals_reference_and_llvm(rng, tmp_path):
    x = relax.Var("x", relax.TensorType((4, 33), "float32"))
    mod = function([x], lambda bb, x: quantize(x, QUANT))
    assert offloaded(mod) == ["quantize"]
    values = quantized_input(rng, (4, 33), None, scale=2.0)
    ours = build_and_run(mod, "deeploy", [values], tmp_path)
    assert_bits_equal(ours, reference.quantize_s8(values, QUANT))
    assert np.abs(ours.astype(np.int32) - build_and_run(mod, "llvm", [values], tmp_path)).max() <= 1


def test_per_channel_quantize_stays_in_tvm():
    x = relax.Var("x", relax.TensorType((4, 3), "float32"))
    scales, zeros = relax.const(np.array([0.1, 0.2, 0.3], "float32")), relax.const(np.zeros(3, "int8"))
    mod = function([x], lambda bb, x: relax.op.quantize(x, scales, zeros, axis=1, out_dtype="int8"))
    assert offloaded(mod) == []


EDGE_VALUES = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997, 126.5, 127.5, -128.5, -129.5, 254.5, -255.5,
                        3e38, -3e38, np.inf, -np.inf, 1e6, 0.0, -0.0, 1e-40], np.float32)
EDGE_QUANTS = (reference.Quant(1.0, 0), reference.Quant(0.5, 3), reference.Quant(1.0, -128), reference.Quant(1.0, 127))

RV32_DRIVER = """
#include <stdio.h>
#include "dpl_kernels.h"
#include "quantize_vectors.h"
int main(void) {
  int32_t i, errors = 0;
  for (i = 0; i < N; ++i) errors += dpl_quantize_with(X[i % VALUES], dpl_quantizer(&Q[i / VALUES])) != Y[i];
  printf("quantize: %ld errors\\n", (long)errors);
  return errors != 0;
}
"""


@pytest.mark.rv32
def test_rv32imafc_rounding_instruction_matches_the_reference(tmp_path):
    """On cores with F the quantize is fmax.s / fmin.s and one fcvt.w.s (rne): halves to even, saturation,
    infinities and the extreme zero points as reference.quantize_s8, under qemu."""
    rng = np.random.default_rng(5)
    values = np.concatenate([EDGE_VALUES, (rng.integers(-600, 600, 200) / 2).astype(np.float32),
                             rng.standard_normal(200).astype(np.float32) * 100])
    expected = np.concatenate([reference.quantize_s8(values, q) for q in EDGE_QUANTS])
    floats = ", ".join(f"{v!r}f" if np.isfinite(v) else ("-" if v < 0 else "") + "HUGE_VALF" for v in values.tolist())
    quants = ", ".join(f"{{{q.scale!r}f, {q.zp}}}" for q in EDGE_QUANTS)
    (tmp_path / "quantize_vectors.h").write_text(
        f"#define VALUES {values.size}\n#define N {expected.size}\n"
        f"static const float X[VALUES] = {{{floats}}};\nstatic const dpl_quant_t Q[] = {{{quants}}};\n"
        f"static const int8_t Y[N] = {{{', '.join(str(v) for v in expected.tolist())}}};\n")
    (tmp_path / "quantize_rv32.c").write_text(RV32_DRIVER)
    elf = qemu.build_program([tmp_path / "quantize_rv32.c"], tmp_path / "quantize.elf", isa=WITH_FPU,
                             flags=(f"-I{tmp_path}", "-DDPL_PROFILE_STEPS=1"))
    code, output = qemu.run_elf(elf, 1, timeout=60)
    assert code == 0 and "quantize: 0 errors" in output, output
