"""The tiler: fits L1, predicts DMA, refuses the impossible clearly, and tiled builds stay exact."""

import re

import numpy as np
import pytest
import tvm
from conftest import assert_close_f32, build_and_run
from hypothesis import given, settings
from hypothesis import strategies as st
from test_int8 import expected_qdq, qdq_gemm_module
from test_patterns import graph
from tvm import relax

import tvm_deeploy
from tvm_deeploy.offload.specs import GemmSpec, Operand
from tvm_deeploy.plan.tiling import TilingError, tile_gemm
from tvm_deeploy.plan.tiling.gemm import geometry
from tvm_deeploy.targets.platforms import KIB, get_platform

SIRACUSA = get_platform("siracusa")


def gemm_spec(m, n, k, dtype="int8", out_dtype="int8", batch=(), b_transposed=False):
    a_strides = tuple(m * k for _ in batch)
    b_strides = tuple(k * n for _ in batch)
    return GemmSpec(dtype, out_dtype, batch, m, n, k, Operand(batch + (m, k), dtype, param=0),
                    Operand(batch + ((n, k) if b_transposed else (k, n)), dtype, param=1), b_transposed,
                    a_strides, b_strides)


@pytest.mark.parametrize("out_dtype, bound, most", [("int32", 4 / 3, 1.5), ("int8", 5 / 3, 2.0)])
def test_256_cubed_int8_at_32_kib(out_dtype, bound, most):
    """Whole-reduction panels: traffic = A + (row blocks) * B + Y. A 128-row A panel alone would fill
    32 KiB, so at least 3 row blocks are needed: (64 Ki + 3 * 64 Ki + Y) against (64 Ki + 64 Ki + Y),
    4/3 with an int32 result and 5/3 with int8 — no tiling can do better. The cycle model may trade a
    little traffic for tiles that split evenly over the cores; the int32 form stays within 1.5x."""
    plan = tile_gemm(gemm_spec(256, 256, 256, "int8", out_dtype), SIRACUSA.with_overrides(l1_bytes=32 * KIB))
    assert plan.tiles > 1 and plan.l1_bytes <= 32 * KIB
    assert plan.solver_status == "optimal"
    assert bound - 1e-9 <= (plan.dma_in_bytes + plan.dma_out_bytes) / plan.dma_lower_bound <= most


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 512), n=st.integers(1, 512), k=st.integers(1, 512),
       l1_kib=st.sampled_from([4, 8, 16, 32, 64, 128, 256]), dtype=st.sampled_from(["int8", "float32"]))
def test_plans_fit_and_predict_their_traffic(m, n, k, l1_kib, dtype):
    spec = gemm_spec(m, n, k, dtype, "int8" if dtype == "int8" else "float32")
    platform = SIRACUSA.with_overrides(l1_bytes=l1_kib * KIB)
    geo = geometry(spec)
    try:
        plan = tile_gemm(spec, platform)
    except TilingError as err:
        # Refused only when even 1x1 output tiles do not fit, and the message says what would.
        assert geo.l1_bytes(1, 1, a_slots=1, b_slots=1) > platform.l1_bytes
        assert f"m={m} n={n} k={k}" in str(err)
        return
    a_slots, b_slots = 1 + (plan.l1_a[0] != plan.l1_a[1]), 1 + (plan.l1_b[0] != plan.l1_b[1])
    assert plan.l1_bytes == geo.l1_bytes(plan.tile_m, plan.tile_n, a_slots, b_slots) <= platform.l1_bytes
    assert (plan.dma_in_bytes, plan.dma_out_bytes) == geo.dma_bytes(plan.tile_m, plan.tile_n)
    assert plan.dma_in_bytes + plan.dma_out_bytes >= plan.dma_lower_bound
    assert plan.tiles == -(-m // plan.tile_m) * -(-n // plan.tile_n)


def test_impossible_l1_names_op_shapes_and_the_smallest_size():
    spec = gemm_spec(100, 80, 512, "float32", "float32")
    with pytest.raises(TilingError) as err:
        tile_gemm(spec, SIRACUSA.with_overrides(l1_bytes=4000))
    message = str(err.value)
    assert "gemm float32->float32 m=100 n=80 k=512" in message and "L1 = 4000 bytes" in message
    smallest = int(re.search(r"needs (\d+) bytes of L1", message).group(1))
    assert smallest == geometry(spec).l1_bytes(1, 1, a_slots=1, b_slots=1) == 4112
    assert tile_gemm(spec, SIRACUSA.with_overrides(l1_bytes=smallest)).l1_bytes == smallest  # exactly that works
    with pytest.raises(TilingError):
        tile_gemm(spec, SIRACUSA.with_overrides(l1_bytes=smallest - 1))


def test_build_with_impossible_l1_raises_the_tiling_error():
    weight = np.ones((1024, 8), "float32")
    mod = graph([((4, 1024), "float32")], lambda bb, x: relax.op.matmul(x, relax.const(weight)))
    message = r"m=4 n=8 k=1024: no tiling fits L1 = 4096 bytes.*needs 8208 bytes"
    with pytest.raises(TilingError, match=message):
        tvm_deeploy.compile_report(mod, tvm_deeploy.target(l1_bytes=4 * KIB))
    partitioned = tvm_deeploy.partition_for_deeploy(mod)  # partitioning does not tile: no error yet
    assert [gv.name_hint for gv, f in partitioned.functions.items()
            if f.attrs and f.attrs.get("Codegen") == "deeploy"] == ["fused_relax_matmul_deeploy"]
    with pytest.raises(TilingError, match=message):  # through TVM's FFI, with its type
        tvm.relax.build(mod, target=tvm_deeploy.target(l1_bytes=4 * KIB))


def test_tiling_is_deterministic():
    spec = gemm_spec(200, 96, 77)
    platform = SIRACUSA.with_overrides(l1_bytes=16 * KIB)
    first, second = tile_gemm(spec, platform), tile_gemm(spec, platform)
    assert (first.tile_m, first.tile_n, first.l1_a, first.l1_b, first.l1_y) == \
        (second.tile_m, second.tile_n, second.l1_a, second.l1_b, second.l1_y)


@pytest.mark.parametrize("npu", [True, False])
def test_compile_report_fields(npu):
    mod = tvm_deeploy.models.int8_mlp()
    report = tvm_deeploy.compile_report(mod, tvm_deeploy.target(l1_bytes=4 * KIB, npu=npu))
    assert len(report) == 2
    for entry in report.values():
        assert entry["op"] == "gemm" and entry["dtype"] == "int8"
        assert entry["engine"] == ("npu" if npu else "cluster")
        assert set(entry["modelled_cycles"]) == ({"cluster", "npu"} if npu else {"cluster"})
        assert entry["modelled_cycles"][entry["engine"]] == min(entry["modelled_cycles"].values())
        # on the NPU the weights never enter L1, so a layer can fit in one tile
        assert entry["tiles"] >= (1 if npu else 2) and entry["l1_bytes"] <= 4 * KIB
        assert entry["dma_in_bytes"] + entry["dma_out_bytes"] >= entry["dma_lower_bound"] > 0
        assert entry["solver_status"] == "optimal"


SMALL_PRIMES = [1, 2, 3, 5, 7, 13, 31, 61, 67, 127]


@settings(max_examples=12, deadline=None)
@given(m=st.sampled_from(SMALL_PRIMES + [16, 64, 96]), n=st.sampled_from(SMALL_PRIMES + [8, 48]),
       k=st.sampled_from(SMALL_PRIMES + [32, 200]), l1_kib=st.sampled_from([4, 8, 32, 256]),
       transposed=st.booleans())
def test_tiled_fp32_gemm_matches_llvm(tmp_path_factory, m, n, k, l1_kib, transposed):
    rng = np.random.default_rng(m * 7919 + n * 31 + k)
    weight = rng.standard_normal((n, k) if transposed else (k, n)).astype("float32")
    bias = rng.standard_normal(n).astype("float32")

    def body(bb, x):
        w = bb.emit(relax.op.permute_dims(relax.const(weight))) if transposed else relax.const(weight)
        return relax.op.add(bb.emit(relax.op.matmul(x, w)), relax.const(bias))

    mod = graph([((m, k), "float32")], body)
    target = tvm_deeploy.target(l1_bytes=l1_kib * KIB)
    try:
        tvm_deeploy.compile_report(mod, target)
    except TilingError:
        assert geometry(gemm_spec(m, n, k, "float32", "float32")).l1_bytes(1, 1, 1, 1) > l1_kib * KIB
        return
    x = rng.standard_normal((m, k)).astype("float32")
    tmp = tmp_path_factory.mktemp("tiled")
    assert_close_f32(build_and_run(mod, target, [x], tmp), build_and_run(mod, "llvm", [x], tmp))


@settings(max_examples=12, deadline=None)
@given(m=st.sampled_from(SMALL_PRIMES + [64]), n=st.sampled_from(SMALL_PRIMES + [64]),
       k=st.sampled_from(SMALL_PRIMES + [256, 509]), l1_kib=st.sampled_from([4, 8, 32, 256]))
def test_tiled_int8_qdq_gemm_is_bit_exact(tmp_path_factory, m, n, k, l1_kib):
    rng = np.random.default_rng(m * 7919 + n * 31 + k + l1_kib)
    weight_q = rng.integers(-127, 128, (k, n)).astype("int8")
    w_scale = rng.uniform(0.002, 0.02, n).astype("float32")
    w_zp = np.zeros(n, "int8")
    params = dict(x_scale=0.05, x_zp=3, y_scale=0.3, y_zp=-4, bias=rng.standard_normal(n).astype("float32"))
    mod = qdq_gemm_module((m, k), weight_q, w_scale, w_zp, **params)
    target = tvm_deeploy.target(l1_bytes=l1_kib * KIB)
    x_q = rng.integers(-128, 128, (m, k)).astype("int8")
    tmp = tmp_path_factory.mktemp("tiled_int8")
    ours = build_and_run(mod, target, [x_q], tmp)
    np.testing.assert_array_equal(ours, expected_qdq(x_q, weight_q, w_scale, w_zp, **params))
    assert np.abs(ours.astype(np.int32) - build_and_run(mod, "llvm", [x_q], tmp)).max() <= 1


def test_compile_report_256_cubed_int8_at_32_kib():
    """The tiling issue's bar, on Relax modules: more than one tile, DMA within 1.5x of the lower
    bound (int32 result; the int8-output QDQ form cannot beat 5/3, see test_256_cubed_int8_at_32_kib),
    solver under 2 s. On the cluster: the NPU would keep the weights resident and move far less."""
    rng = np.random.default_rng(0)
    weight = rng.integers(-128, 128, (256, 256)).astype("int8")
    int32_out = graph([((256, 256), "int8")],
                      lambda bb, x: relax.op.matmul(x, relax.const(weight), out_dtype="int32"))
    qdq = qdq_gemm_module((256, 256), weight, np.full(256, 0.01, "float32"), np.zeros(256, "int8"),
                          x_scale=0.02, x_zp=0, y_scale=0.5, y_zp=0)
    for mod, bound in ((int32_out, 1.5), (qdq, 2.0)):
        # B as int8 (lanes=False): the bar is the tiler's, for B at one byte a weight
        target = tvm_deeploy.target(l1_bytes=32 * KIB, npu=False, lanes=False)
        (entry,) = tvm_deeploy.compile_report(mod, target).values()
        ratio = (entry["dma_in_bytes"] + entry["dma_out_bytes"]) / entry["dma_lower_bound"]
        assert entry["tiles"] > 1 and entry["l1_bytes"] <= 32 * KIB
        assert ratio <= bound and entry["solver_status"] == "optimal"


def test_256_cubed_int8_gemm_tiled_at_32_kib_is_bit_exact(tmp_path):
    rng = np.random.default_rng(256)
    weight_q = rng.integers(-127, 128, (256, 256)).astype("int8")
    w_scale = rng.uniform(0.002, 0.02, 256).astype("float32")
    w_zp = np.zeros(256, "int8")
    params = dict(x_scale=0.02, x_zp=-1, y_scale=0.5, y_zp=3, bias=None)
    mod = qdq_gemm_module((256, 256), weight_q, w_scale, w_zp, **params)
    target = tvm_deeploy.target(l1_bytes=32 * KIB)
    (entry,) = tvm_deeploy.compile_report(mod, target).values()
    assert entry["tiles"] > 1
    x_q = rng.integers(-128, 128, (256, 256)).astype("int8")
    np.testing.assert_array_equal(build_and_run(mod, target, [x_q], tmp_path),
                                  expected_qdq(x_q, weight_q, w_scale, w_zp, **params))


@pytest.mark.parametrize("dims, name", [((0, 8, 8), "m"), ((8, 0, 8), "n"), ((8, 8, 0), "k")])
def test_zero_size_gemm_has_its_own_error(dims, name):
    m, n, k = dims
    with pytest.raises(TilingError, match=f"m={m} n={n} k={k} has a zero-size dimension {name}=0"):
        tile_gemm(gemm_spec(m, n, k), SIRACUSA)


def test_greedy_tiler_fits_and_never_beats_cp_sat():
    spec = gemm_spec(200, 96, 77)
    platform = SIRACUSA.with_overrides(l1_bytes=16 * KIB)
    greedy = tile_gemm(spec, platform.with_overrides(tiler="greedy"))
    best = tile_gemm(spec, platform)
    assert (greedy.solver_status, best.solver_status) == ("greedy", "optimal")
    assert greedy.l1_bytes <= 16 * KIB and greedy.modelled_cycles >= best.modelled_cycles
    a_slots, b_slots = 1 + (greedy.l1_a[0] != greedy.l1_a[1]), 1 + (greedy.l1_b[0] != greedy.l1_b[1])
    assert greedy.l1_bytes == geometry(spec).l1_bytes(greedy.tile_m, greedy.tile_n, a_slots, b_slots)


def test_npu_refusal_counts_a_whole_channel_group():
    """On the NPU a column block is a whole group of 16 channels (or all columns): 1 x 16 int8 outputs
    in two slots plus one A row of k bytes is the smallest tiling."""
    spec = gemm_spec(4, 64, 1000)
    smallest = 1000 + 2 * 16  # one A row and two 16-byte output slots
    assert tile_gemm(spec, SIRACUSA.with_overrides(l1_bytes=smallest), "npu").l1_bytes == smallest
    with pytest.raises(TilingError, match=f"on the NPU: no tiling fits L1 = {smallest - 1} bytes.*1x16 output tiles"):
        tile_gemm(spec, SIRACUSA.with_overrides(l1_bytes=smallest - 1), "npu")
