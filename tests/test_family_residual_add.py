"""The residual-add family: kernel against the NumPy reference (bit-exact: one float add per element), the
patterns on Relax graphs, and the offloaded build against TVM's llvm build."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_and_run, offloaded
from family_kernels import (
    assert_bits_equal,
    dequantize,
    function,
    kernel_library,
    pointer,
    quant_pointer,
    quantized_input,
    quants,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax

from tvm_deeploy.offload import reference
from tvm_deeploy.offload.families import residual_add
from tvm_deeploy.offload.specs import Operand
from tvm_deeploy.targets.platforms import get_platform


@pytest.fixture(scope="module")
def lib(build_dir):
    return kernel_library(build_dir)


@settings(max_examples=30)
@given(n=st.integers(1, 300), cores=st.integers(1, 8), b_quant=st.none() | quants, seed=st.integers(0, 2**16))
def test_kernel_is_bit_exact(lib, n, cores, b_quant, seed):
    rng = np.random.default_rng(seed)
    a = quantized_input(rng, n, None)
    b = quantized_input(rng, n, b_quant)
    y = np.full(n, np.nan, np.float32)
    lib.dpl_residual_add(pointer(a), pointer(b), quant_pointer(b_quant), pointer(y), n, cores)
    assert_bits_equal(y, reference.residual_add(a, b, b_quant))


QUANT = reference.Quant(0.05, 3)


def _residual(dtype: str):
    x = relax.Var("x", relax.TensorType((5, 24), "float32"))
    y = relax.Var("y", relax.TensorType((5, 24), dtype))
    if dtype == "int8":
        return function([x, y], lambda bb, x, y: relax.op.add(bb.emit(dequantize(y, QUANT)), x))
    return function([x, y], lambda bb, x, y: relax.op.add(x, y))


@pytest.mark.parametrize("dtype,pattern", [("float32", "residual_add"), ("int8", "residual_add_dq")])
def test_offloaded_equals_reference_and_llvm(dtype, pattern, rng, tmp_path):
    mod = _residual(dtype)
    assert offloaded(mod) == [pattern]
    x = quantized_input(rng, (5, 24), None)
    y = quantized_input(rng, (5, 24), None if dtype == "float32" else QUANT)
    ours = build_and_run(mod, "deeploy", [x, y], tmp_path)
    assert_bits_equal(ours, reference.residual_add(x, y, None if dtype == "float32" else QUANT))
    assert_bits_equal(ours, build_and_run(mod, "llvm", [x, y], tmp_path))


def test_bias_and_broadcasting_adds_stay_in_tvm():
    x = relax.Var("x", relax.TensorType((5, 24), "float32"))
    row = relax.Var("row", relax.TensorType((1, 24), "float32"))
    bias = relax.const(np.ones(24, "float32"))
    assert offloaded(function([x], lambda bb, x: relax.op.add(x, bias))) == []
    assert offloaded(function([x, row], lambda bb, x, row: relax.op.add(x, row))) == []


@pytest.mark.parametrize("elements,cores,expected", [(4, 8, 1), (16, 8, 1), (64, 8, 8), (42, 8, 7), (1024, 1, 1)])
def test_cores_chosen_by_modelled_cost(elements, cores, expected):
    """More cores only when the fork costs less than the work they take over; of equal shares, fewer cores."""
    operand = Operand((elements,), "float32", param=0)
    spec = residual_add.ResidualAddSpec(operand, operand, reference.Quant(0.1, 0), elements)
    platform = get_platform("siracusa").with_overrides(cores=cores)
    plan = residual_add.FAMILY.plan(spec, platform)
    costs = platform.cluster_costs
    one_core = costs.elementwise_cycles("residual_add", elements, dequantized=1)
    assert plan["cores"] == expected and plan["engine"] == "cluster" and plan["tiling"] is None
    assert plan["modelled_cycles"]["cluster"] <= one_core
    if expected > 1:
        share = costs.elementwise_cycles("residual_add", -(-elements // expected), dequantized=1)
        assert plan["modelled_cycles"]["cluster"] == share + costs.fork_cycles
