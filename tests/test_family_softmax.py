"""The softmax family: dpl_softmax_f32 bit-exact against reference.softmax_f32 on any number of cores, its
rows split over the cores by modelled cost, and the offloaded build against TVM's llvm build (libm's exp)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close_f32, build_and_run, offloaded
from family_kernels import assert_bits_equal, function, kernel_library, pointer
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax

from tvm_deeploy.offload import reference
from tvm_deeploy.offload.families import softmax
from tvm_deeploy.offload.specs import Operand, SoftmaxSpec
from tvm_deeploy.targets.platforms import get_platform


@pytest.fixture(scope="module")
def lib(build_dir):
    return kernel_library(build_dir)


@settings(max_examples=30)
@given(rows=st.integers(1, 24), cols=st.integers(1, 80), cores=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_kernel_is_bit_exact(lib, rows, cols, cores, seed):
    x = (np.random.default_rng(seed).standard_normal((rows, cols)) * 8).astype(np.float32)
    x[:, 0] -= 200.0  # exp underflows to 0 there
    y = np.full_like(x, np.nan)
    lib.dpl_softmax_f32(pointer(x), pointer(y), rows, cols, cores)
    assert_bits_equal(y, reference.softmax_f32(x))


@pytest.mark.parametrize("rows,cols,expected", [(1, 4, 1), (2, 16, 2), (96, 16, 8), (6, 64, 6)])
def test_rows_over_the_cores_by_modelled_cost(rows, cols, expected):
    spec = SoftmaxSpec(Operand((rows, cols), "float32", param=0), rows, cols)
    platform = get_platform("siracusa")
    plan = softmax.FAMILY.plan(spec, platform)
    costs = platform.cluster_costs
    assert plan["cores"] == expected and plan["engine"] == "cluster" and plan["tiling"] is None
    share = costs.elementwise_cycles("softmax", -(-rows // expected) * cols)
    assert plan["modelled_cycles"]["cluster"] == share + (costs.fork_cycles if expected > 1 else 0)


def test_offloaded_matches_reference_and_llvm(rng, tmp_path):
    x = relax.Var("x", relax.TensorType((12, 33), "float32"))
    mod = function([x], lambda bb, x: relax.op.nn.softmax(x, axis=-1))
    assert offloaded(mod) == ["softmax"]
    values = (rng.standard_normal((12, 33)) * 6).astype(np.float32)
    ours = build_and_run(mod, "deeploy", [values], tmp_path)
    assert_bits_equal(ours, reference.softmax_f32(values))
    assert_close_f32(ours, build_and_run(mod, "llvm", [values], tmp_path), rtol=1e-6)
