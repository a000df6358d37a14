"""dpl_gemm_s8_lanes (c_kernels/gemm_lanes.c) with B packed in lane words (tvm_deeploy/plan/lanes.py): bit-exact
against reference.gemm_s8 on this host and on RV32, the chunking at the lanes' limits, and the planner's choice."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from conftest import C_FLAGS, HAL_HOST, KERNEL_DIR, KERNEL_SOURCES, run_checked
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tvm_deeploy
from tvm_deeploy.emit.c import ctypes_struct
from tvm_deeploy.emit.kernel_args import REQUANT, REQUANT_MODE
from tvm_deeploy.offload import reference as ref
from tvm_deeploy.offload.specs import GemmSpec, Operand
from tvm_deeploy.plan import engines, lanes
from tvm_deeploy.targets import kernel_count, qemu
from tvm_deeploy.targets.platforms import get_platform
from tvm_deeploy.targets.target import platform_of

CRequant = ctypes_struct(REQUANT)
I32 = ctypes.c_int32


@pytest.fixture(scope="module")
def lib(build_dir):
    so = build_dir / "libdpl_lanes.so"
    run_checked(["gcc", *C_FLAGS, "-fPIC", "-shared", "-pthread", "-I", KERNEL_DIR, *KERNEL_SOURCES, HAL_HOST,
                 "-o", so, "-lm"])
    dll = ctypes.CDLL(str(so))
    # (a, lda, panels, k_chunk, y, ldy, m, n, k, b_zp, rq)
    dll.dpl_gemm_s8_lanes.argtypes = [ctypes.c_void_p, I32, ctypes.c_void_p, I32, ctypes.c_void_p, I32, I32, I32,
                                      I32, I32, ctypes.POINTER(CRequant)]
    dll.dpl_gemm_s8_lanes.restype = None
    return dll


def _requant(rng, mode: str, n: int, k: int) -> ref.Requant | None:
    if mode == "none":
        return None
    bias = rng.integers(-5000, 5000, n).astype(np.int32)
    if mode == "fixed":
        mul, shift = ref.quantize_multiplier(rng.uniform(1e-4, 1e-2, n) / max(1, k) * 64)
        return ref.Requant("fixed", bias=bias, mul=mul, shift=shift, out_zp=int(rng.integers(-10, 10)))
    mul = rng.integers(1, 64, n).astype(np.int32)
    shift = rng.integers(8, 16, n).astype(np.int32)
    return ref.Requant("int_ops", bias, mul, None, shift, int(rng.integers(-10, 10)), -128, 127)


def c_lanes(lib, a: np.ndarray, b: np.ndarray, b_zp: int, rq: ref.Requant | None, k_chunk: int) -> np.ndarray:
    m, k = a.shape
    n = b.shape[1]
    words = lanes.pack_lanes(b, False)
    keep = {name: None if rq is None or getattr(rq, name) is None else np.ascontiguousarray(getattr(rq, name),
                                                                                           np.int32)
            for name in ("bias", "mul", "add", "shift")}
    crq = None
    if rq is not None:
        ptr = {name: None if v is None else v.ctypes.data_as(ctypes.POINTER(I32)) for name, v in keep.items()}
        crq = CRequant(REQUANT_MODE.values[rq.mode], ptr["bias"], ptr["mul"], ptr["add"], ptr["shift"], rq.out_zp,
                       rq.lo, rq.hi)
    y = np.full((m, n + 3), 0x5A, np.int8 if rq else np.int32)  # 3 columns beyond y: must stay untouched
    lib.dpl_gemm_s8_lanes(a.ctypes.data, k, words.ctypes.data, k_chunk, y.ctypes.data, n + 3, m, n, k, b_zp,
                          ctypes.byref(crq) if crq is not None else None)
    assert (y[:, n:] == 0x5A).all(), "wrote beyond the last column"
    return y[:, :n]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 5), n=st.integers(1, 61), k=st.integers(1, 200), b_zp=st.sampled_from([0, 0, -3, 7]),
       mode=st.sampled_from(["none", "fixed", "int_ops"]), weights=st.sampled_from(["random", "extreme"]),
       seed=st.integers(0, 2**32 - 1))
def test_lanes_match_reference(lib, m, n, k, b_zp, mode, weights, seed):
    """Any shape (partial last panel, odd rows, k not a multiple of the unrolling), every requantization; extreme
    weights (all -128 or 127) and activations force sums to the lanes' limit and several chunks."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    if weights == "extreme":
        b = rng.choice(np.array([-128, 127], np.int8), (k, n))
        a = np.where(rng.random((m, k)) < 0.5, np.int8(-128), np.int8(127)).astype(np.int8)
    else:
        b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    rq = _requant(rng, mode, n, k)
    chunk = lanes.lanes_chunk(b, False)
    assert 1 <= chunk <= k
    np.testing.assert_array_equal(c_lanes(lib, a, b, b_zp, rq, chunk), ref.gemm_s8(a, b, 0, b_zp, rq))


def test_lanes_chunk_at_the_limit():
    """A chunk's column sum must stay below 2^20 for any int8 activation: all -128 weights allow 63 steps
    (128 * 128 * 64 = 2^20 would not fit), 127 allows 64; small weights keep the whole reduction in one chunk."""
    assert lanes.lanes_chunk(np.full((200, 5), -128, np.int8), False) == 63
    assert lanes.lanes_chunk(np.full((200, 5), 127, np.int8), False) == 64
    assert lanes.lanes_chunk(np.full((300, 5), 20, np.int8), False) == 300
    b = np.full((100, 4), 1, np.int8)
    b[:70, 2] = -128  # one column decides: 128 * (128 * c) < 2^20 over its first 70 steps
    assert lanes.lanes_chunk(b, False) == 63
    assert lanes.lanes_chunk(b.T.copy(), True) == 63


def test_pack_lanes_words_by_hand():
    """Columns (b0, b1, b2) of a k step give the words b0 + 2^21 b1 and b2 + 2^10 b1 (mod 2^32); a panel's
    second triple follows; a missing column is a zero weight."""
    b = np.array([[1, -2, 3, 4, 5]], np.int8)
    words = lanes.pack_lanes(b, False)
    assert words.tolist() == [(1 - 2 * 2**21) % 2**32, (3 - 2 * 2**10) % 2**32, 4 + 5 * 2**21, 5 * 2**10]
    assert np.array_equal(lanes.pack_lanes(b.T.copy(), True), words)


@pytest.mark.skipif(bool(qemu.missing_tools()), reason="needs the RV32 toolchain and qemu")
@pytest.mark.parametrize("m, n, k, b_zp", [(1, 64, 64, 0), (2, 29, 172, 0), (3, 13, 37, 5)])
def test_lanes_bit_exact_on_rv32(m, n, k, b_zp):
    count = kernel_count.gemm_s8_count(m, n, k, b_zp=b_zp, requantize=True, lanes=True, seed=m * n)
    assert count.errors == 0


def _linear_spec(rng) -> GemmSpec:
    """A decode step's int8 linear layer, 1 x 64 by a constant 64 x 48, QDQ requantization."""
    requant = ref.Requant("fixed", bias=np.zeros(48, np.int32), mul=np.ones(48, np.int32),
                          shift=np.full(48, 40, np.int32))
    weights = rng.integers(-127, 128, (64, 48)).astype(np.int8)
    return GemmSpec("int8", "int8", (), 1, 48, 64, Operand((1, 64), "int8", param=0),
                    Operand((64, 48), "int8", const=weights), False, (), (), requant=requant)


def test_planner_packs_constant_int8_weights():
    """An int8 GEMM against constant weights goes to the cluster with B in lane words, unless the target says
    lanes=False (through the target's mcpu, as relax.build sees it)."""
    spec = _linear_spec(np.random.default_rng(0))
    platform = get_platform("siracusa").with_overrides(npu=False)
    choice = engines.choose_engine(spec, platform)
    assert choice.tiling.engine == "cluster" and choice.tiling.b_lanes_chunk == 64
    # the packed block moves 16 bytes per panel and k step
    assert choice.tiling.dma_in_bytes == 64 + lanes.panels(48) * 64 * lanes.PANEL_BYTES_PER_K
    plain = platform_of(tvm_deeploy.target(npu=False, lanes=False))
    assert plain.mcpu == "siracusa,npu=0,lanes=0"
    plain_choice = engines.choose_engine(spec, plain)
    assert plain_choice.tiling.b_lanes_chunk == 0 and plain_choice.tiling.dma_in_bytes == 64 + 64 * 48


def test_planner_keeps_int8_weights_where_lanes_do_not_fit_l1():
    """The packed panel of 6 columns x 64 k steps alone needs 1 KiB: at L1 = 1 KiB B stays int8 (1 x 1 tiles fit)."""
    platform = get_platform("siracusa").with_overrides(npu=False, l1_bytes=1024)
    choice = engines.choose_engine(_linear_spec(np.random.default_rng(0)), platform)
    assert choice.tiling.b_lanes_chunk == 0 and choice.tiling.l1_bytes <= 1024
