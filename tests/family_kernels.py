"""Shared by the element-wise families' tests (test_family_*.py): the kernel library on this host through
ctypes, int8 quantization parameters for the kernels, and one-function Relax modules."""

from __future__ import annotations

import ctypes

import numpy as np
from conftest import C_FLAGS, HAL_HOST, KERNEL_DIR, KERNEL_SOURCES, run_checked
from hypothesis import strategies as st
from tvm import relax

from tvm_deeploy.emit.c import ctypes_struct
from tvm_deeploy.emit.kernel_args import QUANT
from tvm_deeploy.offload import reference

CQuant = ctypes_struct(QUANT)

# Per-tensor quantizations: a scale spanning the values' range (and beyond, so results saturate) and a zero point.
quants = st.builds(reference.Quant, scale=st.floats(0.002, 0.2).map(lambda s: float(np.float32(s))),
                   zp=st.integers(-20, 20))


_LIBRARY: list[ctypes.CDLL] = []  # built once per session


def kernel_library(build_dir) -> ctypes.CDLL:
    """Every kernel with the host HAL (threads for the cluster's cores), as a shared library: built by the
    first caller in its build_dir (pytest keeps it for the session), shared by the later ones."""
    if not _LIBRARY:
        so = build_dir / "libdpl_families.so"
        run_checked(["gcc", *C_FLAGS, "-fPIC", "-shared", "-pthread", "-I", KERNEL_DIR, *KERNEL_SOURCES, HAL_HOST,
                     "-o", so, "-lm"])
        _LIBRARY.append(ctypes.CDLL(str(so)))
    return _LIBRARY[0]


def pointer(array: np.ndarray | None):
    return None if array is None else ctypes.c_void_p(array.ctypes.data)


def quant_pointer(quant: reference.Quant | None):
    return None if quant is None else ctypes.byref(CQuant(scale=quant.scale, zp=quant.zp))


def quantized_input(rng, shape, quant: reference.Quant | None, scale: float = 1.0) -> np.ndarray:
    """Random float32 values, or int8 values for a quantized operand."""
    if quant is None:
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    return rng.integers(-128, 128, shape).astype(np.int8)


def assert_bits_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual.view(np.uint8), expected.view(np.uint8))


def function(params: list[relax.Var], body) -> relax.Function:
    """`main(params)` returning what `body(block builder, *params)` emits last."""
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *params))
        bb.emit_func_output(out)
    return bb.get()


def quantize(x, quant: reference.Quant):
    return relax.op.quantize(x, relax.const(quant.scale, "float32"), relax.const(quant.zp, "int8"), out_dtype="int8")


def dequantize(x, quant: reference.Quant):
    return relax.op.dequantize(x, relax.const(quant.scale, "float32"), relax.const(quant.zp, "int8"))
