"""float16 in the standalone program (program/half.py): the C conversions against NumPy for every half value
and the float32 values around every rounding boundary, and float16 models exported, built with -Werror and
run against TVM's VM and llvm build."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import C_FLAGS, KERNEL_DIR, run_checked
from test_export import make, parse, run_driver
from test_patterns import graph
from tvm import relax

import tvm_deeploy
from tvm_deeploy.program.export import export_c
from tvm_deeploy.targets import qemu

CONVERTER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "dpl_half.h"

/* Reads "h <count>" then that many half bit patterns, or "f <count>" then float bit patterns; prints the
   conversions' bit patterns. */
int main(void)
{
  char kind;
  long n, i;
  if (scanf(" %c %ld", &kind, &n) != 2) {
    return 1;
  }
  for (i = 0; i < n; ++i) {
    unsigned long bits;
    if (scanf("%lx", &bits) != 1) {
      return 1;
    }
    if (kind == 'h') {
      float f = dpl_half_to_float((half)bits);
      uint32_t out;
      memcpy(&out, &f, sizeof out);
      printf("%08lx\n", (unsigned long)out);
    } else {
      uint32_t in = (uint32_t)bits;
      float f;
      memcpy(&f, &in, sizeof f);
      printf("%04x\n", (unsigned)dpl_float_to_half(f));
    }
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def converter(build_dir):
    (build_dir / "convert.c").write_text(CONVERTER)
    binary = build_dir / "convert"
    run_checked(["gcc", *C_FLAGS, f"-I{KERNEL_DIR}", build_dir / "convert.c", "-o", binary])

    def convert(kind: str, bits: np.ndarray) -> np.ndarray:
        text = f"{kind} {bits.size}\n" + "\n".join(f"{int(b):x}" for b in bits.tolist()) + "\n"
        out = subprocess.run([binary], input=text, capture_output=True, text=True, check=True).stdout.split()
        return np.array([int(x, 16) for x in out], np.uint32 if kind == "h" else np.uint16)

    return convert


def test_every_half_value_converts_to_its_float(converter):
    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    ours = converter("h", halves).view(np.float32)
    expected = halves.view(np.float16).astype(np.float32)
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(ours), nan)
    assert np.array_equal(ours[~nan].view(np.uint32), expected[~nan].view(np.uint32))  # signed zeros too


def test_floats_round_to_the_nearest_half_ties_to_even(converter):
    """Every finite half, the midpoints between neighbours (ties), one float ULP either side of them, the
    overflow edge, subnormals, infinities and random bit patterns: the same bits as NumPy's rounding."""
    finite = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = np.sort(finite[np.isfinite(finite)].astype(np.float64))
    midpoints = ((finite[1:] + finite[:-1]) / 2).astype(np.float32)  # exact in float32
    edges = np.array([65504, 65519.99, 65520, 65535, 65536, 1e9, 2.0**-24, 2.0**-25, 2.0**-26, 3 * 2.0**-26,
                      np.inf, -np.inf, 0.0, -0.0], np.float32)
    rng = np.random.default_rng(0)
    floats = np.concatenate([finite.astype(np.float32), midpoints, np.nextafter(midpoints, np.float32(np.inf)),
                             np.nextafter(midpoints, np.float32(-np.inf)), edges, -edges,
                             rng.integers(0, 1 << 32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    ours = converter("f", floats.view(np.uint32)).view(np.float16)
    with np.errstate(over="ignore"):  # beyond the half range: infinity, as in C
        expected = floats.astype(np.float16)
    nan = np.isnan(floats)
    assert np.array_equal(np.isnan(ours), nan)
    assert np.array_equal(ours[~nan].view(np.uint16), expected[~nan].view(np.uint16))


def _cast(bb, x, dtype):
    return bb.emit(relax.op.astype(x, dtype))


MODELS = {
    # name: (inputs, body, elements checked)
    "half in and out: exp, scale, row sums": (
        [((4, 8), "float16")],
        lambda bb, x: relax.op.add(relax.op.sum(relax.op.exp(relax.op.multiply(x, relax.const(0.5, "float16"))),
                                                axis=[1], keepdims=True), x), 32),
    "float32 in and out, half inside: matmul, softmax, transpose": (
        [((6, 16), "float32"), ((16, 8), "float32")],
        lambda bb, x, w: relax.op.astype(relax.op.nn.softmax(relax.op.permute_dims(relax.op.matmul(
            _cast(bb, x, "float16"), _cast(bb, w, "float16"))), axis=-1), "float32"), 48),
    "int8 to half and back": (
        [((3, 5), "int8")],
        lambda bb, x: relax.op.astype(relax.op.maximum(_cast(bb, x, "float16"), relax.const(-7.5, "float16")),
                                      "int32"), 15),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_half_models_build_with_werror_and_match(name, tmp_path):
    inputs, body, elements = MODELS[name]
    exported = export_c(graph(inputs, body), tvm_deeploy.target(), tmp_path / "p")
    glue = next((tmp_path / "p" / "src").glob("*_glue.c")).read_text()
    assert "dpl_half_to_float" in glue or "dpl_float_to_half" in glue
    code, output = run_driver(make(exported.out_dir, opt="-O2"))
    errors, checked, _ = parse(output)
    assert (code, errors, checked) == (0, 0, elements), output


@pytest.mark.rv32
def test_half_model_runs_on_rv32(tmp_path):
    """The conversions are plain C99 for the MCU too (rv32imafc under qemu)."""
    inputs, body, elements = MODELS["half in and out: exp, scale, row sums"]
    exported = export_c(graph(inputs, body), tvm_deeploy.target(), tmp_path / "p")
    run = qemu.run_project(exported.out_dir, timeout=120)
    assert (run.exit_code, run.errors, run.checked) == (0, 0, elements), run.output
