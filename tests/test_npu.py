"""The NPU engine: its weight layout, its functional model against the reference, tiled NPU GEMMs,
the engine choice, and linear layers of microLlama and stories260K built for it (bit-exact, and equal
to the cluster's result)."""

import ctypes
import dataclasses

import numpy as np
import pytest
from conftest import build_and_run
from hypothesis import given, settings
from hypothesis import strategies as st
from test_int8 import expected_qdq, qdq_gemm_module
from test_patterns import graph
from test_tiled_kernels import U32, CPlan, CRequant, _i32p, dma_counters, lib  # noqa: F401
from tvm import relax

import tvm_deeploy
from tvm_deeploy.offload import reference
from tvm_deeploy.offload.specs import GemmSpec, Operand
from tvm_deeploy.plan.engines import WeightMemoryError, check_weight_memory, choose_engine
from tvm_deeploy.plan.tiling import TilingError, tile_gemm
from tvm_deeploy.plan.tiling.gemm import geometry
from tvm_deeploy.targets import npu
from tvm_deeploy.targets.platforms import KIB, MemoryLevel, get_platform

SIRACUSA = get_platform("siracusa")


class CNpuJob(ctypes.Structure):
    _fields_ = [("input", ctypes.c_void_p), ("input_stride", ctypes.c_uint32), ("weights", ctypes.c_void_p),
                ("output", ctypes.c_void_p), ("output_stride", ctypes.c_uint32), ("rows", ctypes.c_uint32),
                ("in_channels", ctypes.c_uint32), ("out_channels", ctypes.c_uint32),
                ("bias", ctypes.c_void_p), ("mul", ctypes.c_void_p), ("shift", ctypes.c_void_p),
                ("out_zp", ctypes.c_int32), ("clip_lo", ctypes.c_int32), ("clip_hi", ctypes.c_int32)]


def random_layer(rng, k, n):
    weights = rng.integers(-128, 128, (k, n)).astype(np.int8)
    bias = rng.integers(-20000, 20000, n).astype(np.int32)
    mul, shift = reference.quantize_multiplier(rng.uniform(1e-4, 1e-2, n))
    return weights, bias, mul, shift


def test_weight_layout_by_hand():
    w = np.arange(3 * 18, dtype=np.int8).reshape(3, 18)  # k = 3, n = 18: two groups, the second padded
    packed = npu.pack_weights(w)
    assert packed.shape == (2, 3, npu.CHANNEL_GROUP) and packed.nbytes == npu.packed_size(3, 18) == 96
    assert packed[0, 1, 5] == w[1, 5] and packed[1, 2, 1] == w[2, 17] and (packed[1, :, 2:] == 0).all()
    np.testing.assert_array_equal(npu.pack_weights(np.ascontiguousarray(w.T), transposed=True), packed)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 70), n=st.integers(1, 70), rows=st.integers(1, 9), seed=st.integers(0, 2**31))
def test_reference_is_the_clusters_arithmetic(k, n, rows, seed):
    rng = np.random.default_rng(seed)
    weights, bias, mul, shift = random_layer(rng, k, n)
    x = rng.integers(-128, 128, (rows, k)).astype(np.int8)
    packed = npu.pack_weights(weights)
    np.testing.assert_array_equal(npu.unpack_weights(packed, n), weights)
    cluster = reference.gemm_s8(x, weights, requant=reference.Requant("fixed", bias=bias, mul=mul, shift=shift,
                                                                      out_zp=-3, lo=-100, hi=120))
    np.testing.assert_array_equal(npu.npu_linear(x, packed, n, bias, mul, shift, -3, -100, 120), cluster)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 70), n=st.integers(1, 70), rows=st.integers(1, 9), pad=st.integers(0, 5),
       seed=st.integers(0, 2**31))
def test_functional_model_is_bit_exact(lib, k, n, rows, pad, seed):  # noqa: F811
    rng = np.random.default_rng(seed)
    weights, bias, mul, shift = random_layer(rng, k, n)
    packed = npu.pack_weights(weights)
    x = rng.integers(-128, 128, (rows, k + pad)).astype(np.int8)  # rows input_stride = k + pad apart
    out = np.full((rows, n + pad), 77, np.int8)
    job = CNpuJob(x.ctypes.data, k + pad, packed.ctypes.data, out.ctypes.data, n + pad, rows, k, n,
                  bias.ctypes.data, mul.ctypes.data, shift.ctypes.data, 5, -128, 127)
    lib.dpl_npu_submit(ctypes.byref(job))
    lib.dpl_npu_wait()
    np.testing.assert_array_equal(out[:, :n], npu.npu_linear(x[:, :k], packed, n, bias, mul, shift, 5))
    assert (out[:, n:] == 77).all()


def npu_spec(m, n, k, batch=()):
    requant = reference.Requant("fixed", bias=np.zeros(n, np.int32), mul=np.ones(n, np.int32),
                                shift=np.ones(n, np.int32))
    weights = np.zeros((k, n), np.int8)
    return GemmSpec("int8", "int8", batch, m, n, k, Operand(batch + (m, k), "int8", param=0),
                    Operand((k, n), "int8", const=weights), False, tuple(0 for _ in batch),
                    tuple(0 for _ in batch), requant=requant)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 80), n=st.integers(1, 80), k=st.integers(1, 80), l1=st.sampled_from([512, 2048, 16384]),
       seed=st.integers(0, 2**31))
def test_tiled_npu_gemm_is_bit_exact_and_moves_no_weights(lib, m, n, k, l1, seed):  # noqa: F811
    """dpl_gemm_tiled on the NPU engine with the plan the tiler chose: equal to the reference, and the
    DMA moves exactly A in and Y out as the plan predicts (the weights stay in the weight memory)."""
    platform = SIRACUSA.with_overrides(l1_bytes=l1)
    try:
        plan = tile_gemm(npu_spec(m, n, k), platform, "npu")
    except TilingError:  # refused only when one row of A plus two 1x1 Y slots exceed L1
        assert geometry(npu_spec(m, n, k), "npu").l1_bytes(1, 1, a_slots=1, b_slots=0) > l1
        return
    assert plan.engine == "npu" and (plan.tile_n % npu.CHANNEL_GROUP == 0 or plan.tile_n == n)
    rng = np.random.default_rng(seed)
    weights, bias, mul, shift = random_layer(rng, k, n)
    packed = npu.pack_weights(weights)
    x = rng.integers(-128, 128, (m, k)).astype(np.int8)
    y = np.zeros((m, n), np.int8)
    l1_mem = np.zeros(plan.l1_bytes + 8, np.uint8)
    cplan = CPlan(1, m, n, k, 0, plan.tile_m, plan.tile_n, 1, None, None, (U32 * 2)(*plan.l1_a),
                  (U32 * 2)(*plan.l1_b), (U32 * 2)(*plan.l1_y), plan.cores, 0, 0, 1)
    rq = CRequant(1, _i32p(bias), _i32p(mul), None, _i32p(shift), -2, -128, 127)
    lib.dpl_dma_reset_counters()
    lib.dpl_gemm_tiled(ctypes.byref(cplan), l1_mem.ctypes.data, x.ctypes.data, packed.ctypes.data, y.ctypes.data,
                       None, ctypes.byref(rq))
    np.testing.assert_array_equal(y, npu.npu_linear(x, packed, n, bias, mul, shift, -2))
    assert dma_counters(lib) == (plan.dma_in_bytes, plan.dma_out_bytes) == (m * k, m * n)


def test_engine_choice_and_refusals():
    spec = npu_spec(64, 256, 64)
    choice = choose_engine(spec, SIRACUSA)
    estimates = dict(choice.estimates)
    assert choice.tiling.engine == "npu" and estimates["npu"] < estimates["cluster"]
    assert choose_engine(spec, SIRACUSA.with_overrides(npu=False)).tiling.engine == "cluster"
    tiny = choose_engine(npu_spec(1, 16, 16), SIRACUSA)  # 256 MACs: an NPU job costs more than they do
    assert tiny.tiling.engine == "cluster" and dict(tiny.estimates)["npu"] > dict(tiny.estimates)["cluster"]
    fp32 = dataclasses.replace(spec, dtype="float32", out_dtype="float32", requant=None,
                               b=Operand((64, 256), "float32", const=np.zeros((64, 256), np.float32)))
    activation_b = dataclasses.replace(spec, b=Operand((64, 256), "int8", param=1))
    int32_out = dataclasses.replace(spec, out_dtype="int32", requant=reference.Requant("none"))
    for other in (fp32, activation_b, int32_out):
        choice = choose_engine(other, SIRACUSA)
        assert choice.tiling.engine == "cluster" and [e for e, _ in choice.reasons] == ["npu"]


def test_weight_memory_overflow_is_one_clear_error():
    small = dataclasses.replace(SIRACUSA, levels=SIRACUSA.levels[:2] + (MemoryLevel("weights", 64 * KIB, ("npu",)),))
    specs = [npu_spec(16, 256, 256), npu_spec(16, 256, 256)]  # 64 KiB each once packed
    assert check_weight_memory(specs[:1], small) == 64 * KIB
    with pytest.raises(WeightMemoryError, match=r"holds 65536 bytes; the 2 layers mapped to it need 131072"):
        check_weight_memory(specs, small)


# Linear layers (tokens, in, out) of the two model sizes the project targets, quantized per channel.
LAYERS = {
    "microLlama qkvo 64x64": (64, 64, 64),
    "microLlama ffn up 64x256": (64, 64, 256),
    "microLlama ffn down 256x64": (64, 256, 64),
    "microLlama decode ffn up": (1, 64, 256),
    "stories260K kv 64x32": (16, 64, 32),
    "stories260K ffn 64x172": (16, 64, 172),
    "stories260K ffn down 172x64": (16, 172, 64),
    "stories260K head 64x512": (4, 64, 512),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_model_linear_layers_on_the_npu(name, tmp_path):
    tokens, k, n = LAYERS[name]
    rng = np.random.default_rng(sorted(LAYERS).index(name))
    weight_q = rng.integers(-127, 128, (k, n)).astype("int8")
    w_scale = rng.uniform(0.002, 0.02, n).astype("float32")
    w_zp = np.zeros(n, "int8")
    params = dict(x_scale=0.05, x_zp=3, y_scale=0.2, y_zp=-1, bias=rng.standard_normal(n).astype("float32"))
    mod = qdq_gemm_module((tokens, k), weight_q, w_scale, w_zp, **params)
    on_npu, on_cluster = tvm_deeploy.target(npu=True), tvm_deeploy.target(npu=False)
    assert [e["engine"] for e in tvm_deeploy.compile_report(mod, on_npu).values()] == ["npu"]
    assert [e["engine"] for e in tvm_deeploy.compile_report(mod, on_cluster).values()] == ["cluster"]
    x_q = rng.integers(-128, 128, (tokens, k)).astype("int8")
    ours = build_and_run(mod, on_npu, [x_q], tmp_path, "npu")
    np.testing.assert_array_equal(ours, expected_qdq(x_q, weight_q, w_scale, w_zp, **params))
    np.testing.assert_array_equal(ours, build_and_run(mod, on_cluster, [x_q], tmp_path, "cluster"))
    assert np.abs(ours.astype(np.int32) - build_and_run(mod, "llvm", [x_q], tmp_path)).max() <= 1


def test_what_the_npu_cannot_run_goes_to_the_cluster():
    rng = np.random.default_rng(9)
    fp32 = graph([((8, 64), "float32")],
                 lambda bb, x: relax.op.matmul(x, relax.const(rng.standard_normal((64, 32)).astype("float32"))))
    act_x_act = graph([((8, 64), "int8"), ((64, 32), "int8")],
                      lambda bb, x, w: relax.op.matmul(x, w, out_dtype="int32"))
    for mod in (fp32, act_x_act):
        (entry,) = tvm_deeploy.compile_report(mod, tvm_deeploy.target(npu=True)).values()
        assert entry["engine"] == "cluster" and set(entry["modelled_cycles"]) == {"cluster"}


def test_platform_constants_reach_the_c_from_one_definition():
    """c_kernels/dpl_platform.h is what platform_header renders from the Python constants, and the
    library text generated modules embed carries the same."""
    from tvm_deeploy.targets import platform_header, resources
    from tvm_deeploy.targets.platforms import NPU_CHANNEL_GROUP, get_platform

    checked_in = (resources.resource_dir("c_kernels") / platform_header.HEADER_NAME).read_text()
    assert checked_in == platform_header.render(), "run python3 -m tvm_deeploy.targets.platform_header"
    assert f"#define DPL_NPU_GROUP {NPU_CHANNEL_GROUP} " in checked_in
    assert f"#define DPL_EXP2_LUT_BYTES {reference.EXP2_LUT.nbytes} " in checked_in
    assert resources.kernel_sources().index(platform_header.render()) < resources.kernel_sources().index("DPL_NPU_IDLE")
    assert npu.CHANNEL_GROUP == get_platform("siracusa").npu_costs.channel_group == NPU_CHANNEL_GROUP


def test_linker_script_defaults_are_the_siracusa_platform():
    import re

    from tvm_deeploy.targets import resources
    from tvm_deeploy.targets.platforms import get_platform

    script = (resources.resource_dir("c_kernels") / "hal" / "rv32.ld").read_text()
    found = re.findall(r"DEFINED\((__dpl_\w+)\) \? \1 : (0x[0-9a-f]+)", script)
    defaults = {name: int(value, 16) for name, value in found}
    siracusa = get_platform("siracusa")
    assert defaults == {"__dpl_l2_bytes": siracusa.level("L2").bytes, "__dpl_l1_bytes": siracusa.l1_bytes,
                        "__dpl_npu_weight_bytes": siracusa.level("weights").bytes}
