"""The C kernels in c_kernels/ against tvm_deeploy.offload.reference.

The int8 GEMM must be bit-exact (assert_array_equal); the float kernels are checked with tight
tolerances. The kernels are compiled once per module into a shared library and called via ctypes.
"""

from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest
from conftest import C_FLAGS, HAL_HOST, KERNEL_DIR, KERNEL_SOURCES, run_checked
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvm_deeploy.emit.c import ctypes_struct
from tvm_deeploy.emit.kernel_args import REQUANT, REQUANT_MODE
from tvm_deeploy.offload import reference as ref

EXPECTED_SOURCES = {"attention_tiled.c", "gemm_f32.c", "gemm_s8.c", "gemm_tiled.c", "npu_driver.c", "npu_model.c",
                    "softmax_f32.c"}

CXX_FLAGS = ["-x", "c++", "-Wall", "-Wextra", "-Werror", "-O2"]

MODE = REQUANT_MODE.values

HYP = settings(max_examples=40, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow])

I32 = ctypes.c_int32
P_I32 = ctypes.POINTER(ctypes.c_int32)
P_F32 = ctypes.POINTER(ctypes.c_float)
P_I8 = ctypes.POINTER(ctypes.c_int8)


CRequant = ctypes_struct(REQUANT)


@pytest.fixture(scope="module")
def lib(build_dir):
    so = build_dir / "libdpl_kernels.so"
    run_checked(["gcc", *C_FLAGS, "-fPIC", "-shared", "-pthread", "-I", KERNEL_DIR, *KERNEL_SOURCES, HAL_HOST,
          "-o", so, "-lm"])
    dll = ctypes.CDLL(str(so))
    # (a, lda, b, ldb, b_transposed, bias, y, ldy, m, n, k)
    dll.dpl_gemm_f32.argtypes = [P_F32, I32, P_F32, I32, I32, P_F32, P_F32, I32, I32, I32, I32]
    dll.dpl_gemm_f32.restype = None
    # (a, lda, b, ldb, b_transposed, y, ldy, m, n, k, a_zp, b_zp, rq)
    dll.dpl_gemm_s8.argtypes = [P_I8, I32, P_I8, I32, I32, ctypes.c_void_p, I32, I32, I32, I32,
                                I32, I32, ctypes.POINTER(CRequant)]
    dll.dpl_gemm_s8.restype = None
    dll.dpl_softmax_f32.argtypes = [P_F32, P_F32, I32, I32, I32]
    dll.dpl_softmax_f32.restype = None
    return dll


# ---------------------------------------------------------------------------------------------
# ctypes wrappers


def _ptr(arr: np.ndarray | None, ctype):
    return None if arr is None else arr.ctypes.data_as(ctypes.POINTER(ctype))


def _i32(x) -> np.ndarray | None:
    return None if x is None else np.ascontiguousarray(x, dtype=np.int32)


def _ld(view: np.ndarray) -> int:
    """Leading dimension (elements between rows) of a row-major 2-D view with unit column stride."""
    assert view.ndim == 2
    if view.size == 0:
        return view.shape[1]
    assert view.strides[1] == view.itemsize and view.strides[0] % view.itemsize == 0
    return max(view.strides[0] // view.itemsize, view.shape[1])


def _embed(x: np.ndarray, pad: int, fill) -> tuple[np.ndarray, np.ndarray]:
    """x as a sub-block of a larger row-major matrix whose rows are `pad` elements longer than x's
    (pad > 0 also puts a row above and below and pad // 2 columns to the left). Returns (big, view);
    `fill` (a value, or a callable shape -> array) fills big around the view."""
    rows, cols = x.shape
    r0, c0 = (1, pad // 2) if pad else (0, 0)
    shape = (rows + 2 * r0, cols + pad)
    big = fill(shape).astype(x.dtype) if callable(fill) else np.full(shape, fill, dtype=x.dtype)
    view = big[r0:r0 + rows, c0:c0 + cols]
    view[...] = x
    return big, view


def _outside(big: np.ndarray, view: np.ndarray) -> np.ndarray:
    """The elements of big that are not in view (a sub-block of big), flattened."""
    mask = np.ones(big.shape, dtype=bool)
    r0, c0 = divmod((view.ctypes.data - big.ctypes.data) // big.itemsize, big.shape[1])
    mask[r0:r0 + view.shape[0], c0:c0 + view.shape[1]] = False
    return big[mask]


_GARBAGE = np.random.default_rng(99)  # fills the padding around inputs: reading it gives wrong results
Y_SENTINEL = {np.dtype(np.int8): 0x5A, np.dtype(np.int32): 0x5A5A5A5A, np.dtype(np.float32): 12345.0}


def c_gemm_s8(lib, a, b, a_zp=0, b_zp=0, requant: ref.Requant | None = None, b_transposed=False,
              pads=(0, 0, 0)):
    """dpl_gemm_s8 on a, b, y; pads = extra leading-dimension elements of (a, b, y): the operands are
    then sub-blocks of larger matrices, and the elements of y's matrix outside y must stay untouched."""
    a = np.ascontiguousarray(a, dtype=np.int8)
    b = np.ascontiguousarray(b, dtype=np.int8)
    m, k = a.shape
    n = b.shape[0] if b_transposed else b.shape[1]
    rq = requant if requant is not None else ref.Requant("none")
    keep = {name: _i32(getattr(rq, name)) for name in ("bias", "mul", "add", "shift")}
    for name, arr in keep.items():
        assert arr is None or arr.shape == (n,), f"{name} must have length n for the C kernel"
    crq = CRequant(MODE[rq.mode], _ptr(keep["bias"], I32), _ptr(keep["mul"], I32),
                   _ptr(keep["add"], I32), _ptr(keep["shift"], I32), rq.out_zp, rq.lo, rq.hi)
    garbage = lambda shape: _GARBAGE.integers(-128, 128, size=shape)  # noqa: E731
    _, av = _embed(a, pads[0], garbage)
    _, bv = _embed(b, pads[1], garbage)
    y_dtype = np.dtype(np.int32 if rq.mode == "none" else np.int8)
    ybig, yv = _embed(np.zeros((m, n), dtype=y_dtype), pads[2], Y_SENTINEL[y_dtype])
    lib.dpl_gemm_s8(_ptr(av, ctypes.c_int8), _ld(av), _ptr(bv, ctypes.c_int8), _ld(bv), int(b_transposed),
                    yv.ctypes.data, _ld(yv), m, n, k, a_zp, b_zp,
                    ctypes.byref(crq) if requant is not None else None)
    assert (_outside(ybig, yv) == Y_SENTINEL[y_dtype]).all(), "wrote outside the y block"
    return yv.copy()


def c_gemm_f32(lib, a, b, bias=None, b_transposed=False, pads=(0, 0, 0)):
    """dpl_gemm_f32; pads as for c_gemm_s8."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    m, k = a.shape
    n = b.shape[0] if b_transposed else b.shape[1]
    garbage = lambda shape: _GARBAGE.uniform(-1e6, 1e6, size=shape)  # noqa: E731
    _, av = _embed(a, pads[0], garbage)
    _, bv = _embed(b, pads[1], garbage)
    ybig, yv = _embed(np.full((m, n), np.nan, dtype=np.float32), pads[2], Y_SENTINEL[np.dtype(np.float32)])
    lib.dpl_gemm_f32(_ptr(av, ctypes.c_float), _ld(av), _ptr(bv, ctypes.c_float), _ld(bv), int(b_transposed),
                     _ptr(bias, ctypes.c_float), _ptr(yv, ctypes.c_float), _ld(yv), m, n, k)
    assert (_outside(ybig, yv) == Y_SENTINEL[np.dtype(np.float32)]).all(), "wrote outside the y block"
    return yv.copy()


def c_softmax(lib, x, cores=1):
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.full_like(x, np.nan)
    lib.dpl_softmax_f32(_ptr(x, ctypes.c_float), _ptr(y, ctypes.c_float), x.shape[0], x.shape[1], cores)
    return y


# ---------------------------------------------------------------------------------------------
# compilation


def test_sources_present():
    assert {p.name for p in KERNEL_SOURCES} >= EXPECTED_SOURCES


@pytest.mark.parametrize("src", [*KERNEL_SOURCES, HAL_HOST], ids=lambda p: p.name)
def test_compiles_as_c_and_cxx(src, tmp_path):
    # hal/host.c defines its POSIX feature macro itself: plain -std=c99 must do
    run_checked(["gcc", *C_FLAGS, "-pedantic", "-I", KERNEL_DIR, "-c", src, "-o", tmp_path / "c.o"])
    run_checked(["g++", *CXX_FLAGS, "-I", KERNEL_DIR, "-c", src, "-o", tmp_path / "cxx.o"])


def test_concatenated_sources_compile(tmp_path):
    """Generated code pastes the headers, all kernels and (for the VM on this host) the host HAL into
    one translation unit (resources.kernel_sources, hal_source): no clashing static helpers or leaking
    macros, C and C++ (and clang, which also flags an unused static inline function of the main file, as the
    headers' are here), and the host HAL still finds its pthread declarations although its feature macro
    comes after other system headers."""
    from tvm_deeploy.targets import resources

    text = resources.kernel_sources()
    for src in EXPECTED_SOURCES:
        assert f"c_kernels/{src}" in text
    text += resources.hal_source("host")
    cat = tmp_path / "all_kernels.c"
    cat.write_text(text)
    run_checked(["gcc", *C_FLAGS, "-c", cat, "-o", tmp_path / "c.o"])  # no -I: must be self-contained
    run_checked(["g++", *CXX_FLAGS, "-c", cat, "-o", tmp_path / "cxx.o"])
    if shutil.which("clang"):
        run_checked(["clang", *C_FLAGS, "-c", cat, "-o", tmp_path / "clang.o"])


# ---------------------------------------------------------------------------------------------
# reference.quantize_multiplier


@HYP
@given(st.floats(min_value=2.0**-80, max_value=2.0**30, exclude_max=True, allow_subnormal=False))
def test_quantize_multiplier_properties(real):
    if real >= 2.0**30 - 0.25:  # rounds to mul * 2^-1 with mul = 2^31: not representable
        with pytest.raises(ValueError, match="real="):
            ref.quantize_multiplier(real)
        return
    mul, shift = ref.quantize_multiplier(real)
    assert mul.dtype == np.int32 and shift.dtype == np.int32
    assert mul.shape == (1,) and shift.shape == (1,)
    mu, sh = int(mul[0]), int(shift[0])
    assert 1 <= sh <= 62
    if sh < 62:
        assert 2**30 <= mu < 2**31
    else:
        assert 0 <= mu < 2**31
    # |mul * 2^-shift - real| <= 2^-shift / 2, i.e. |mul - real * 2^shift| <= 1/2 (exact in float64
    # since real * 2^shift is a power-of-two scaling)
    assert abs(mu - np.ldexp(real, sh)) <= 0.5


def test_quantize_multiplier_examples():
    mul, shift = ref.quantize_multiplier(np.array([0.5, 1.0, 0.75, 2.0**-40, 2.0**-31, 3.0]))
    assert mul.tolist() == [2**30, 2**30, 3 * 2**29, 2**22, 2**30, 3 * 2**29]
    assert shift.tolist() == [31, 30, 31, 62, 61, 29]
    # rounding the mantissa up to 2^31 renormalizes
    mul, shift = ref.quantize_multiplier(1.0 - 2.0**-40)
    assert (mul[0], shift[0]) == (2**30, 30)
    # list input, 1-D output
    mul, shift = ref.quantize_multiplier([0.25, 0.125])
    assert mul.tolist() == [2**30, 2**30] and shift.tolist() == [32, 33]


@pytest.mark.parametrize("bad", [0.0, -0.5, -np.inf, np.inf, np.nan, 2.0**30, 2.0**31, 2.0**30 - 2.0**-23])
def test_quantize_multiplier_rejects(bad):
    with pytest.raises(ValueError, match="real="):
        ref.quantize_multiplier(bad)
    with pytest.raises(ValueError):
        ref.quantize_multiplier(np.array([0.5, bad]))


# ---------------------------------------------------------------------------------------------
# reference requantization vs the documented formulas, with Python integers


def _py_wrap(x: int) -> int:
    return (x + 2**31) % 2**32 - 2**31


def test_reference_requant_matches_formulas():
    rng = np.random.default_rng(1)
    acc = rng.integers(-(2**31), 2**31, size=(7, 5), dtype=np.int64).astype(np.int32)
    acc[0, :] = [-(2**31), 2**31 - 1, 0, -1, 1]
    mul = rng.integers(-(2**31), 2**31, size=5, dtype=np.int64).astype(np.int32)
    mul[0] = -(2**31)
    add = rng.integers(-(2**31), 2**31, size=5, dtype=np.int64).astype(np.int32)
    shift_f = rng.integers(1, 63, size=5).astype(np.int32)
    shift_i = rng.integers(0, 32, size=5).astype(np.int32)
    zp = -(2**31) + 5

    got_f = ref.requantize_fixed(acc, mul, shift_f, 3, -100, 90)
    got_i = ref.requantize_int_ops(acc, mul, add, shift_i, zp, -128, 127)
    for r in range(acc.shape[0]):
        for c in range(acc.shape[1]):
            x = int(acc[r, c]) * int(mul[c])
            x = (x + (1 << (int(shift_f[c]) - 1))) >> int(shift_f[c])
            assert got_f[r, c] == min(max(x + 3, -100), 90)
            t = _py_wrap(int(acc[r, c]) * int(mul[c]))
            t = _py_wrap(t + int(add[c]))
            t = t >> int(shift_i[c])
            t = _py_wrap(t + zp)
            assert got_i[r, c] == min(max(t, -128), 127)


def test_reference_gemm_s8_none_matches_definition():
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, size=(3, 6), dtype=np.int8)
    b = rng.integers(-128, 128, size=(6, 4), dtype=np.int8)
    got = ref.gemm_s8(a, b, a_zp=-7, b_zp=11)
    want = [[sum((int(a[i, kk]) + 7) * (int(b[kk, j]) - 11) for kk in range(6)) for j in range(4)]
            for i in range(3)]
    assert got.dtype == np.int32 and got.tolist() == want
    np.testing.assert_array_equal(ref.gemm_s8(a, np.ascontiguousarray(b.T), -7, 11, b_transposed=True), got)


def test_requant_validation():
    with pytest.raises(ValueError):
        ref.Requant("bogus", None, None, None, None)
    with pytest.raises(ValueError):
        ref.Requant("fixed", None, None, None, np.array([3], np.int32))
    with pytest.raises(ValueError):
        ref.requantize_fixed(np.zeros((1, 2), np.int32), [1, 1], [0, 3], 0)
    with pytest.raises(ValueError):
        ref.requantize_int_ops(np.zeros((1, 2), np.int32), None, None, [32, 0], 0, -128, 127)


# ---------------------------------------------------------------------------------------------
# dpl_gemm_s8: bit-exact against reference.gemm_s8


def _rand_i32(rng, size, lo=-(2**31), hi=2**31):
    return rng.integers(lo, hi, size=size, dtype=np.int64).astype(np.int32)


def _make_requant(rng, mode, variant, n, acc, use_bias, null_mul, null_add, null_shift):
    """A Requant for `mode`. variant "sane" keeps most outputs inside [lo, hi] so the test sees
    more than saturation; "wild" uses full-range parameters (int32 wrap-around in int_ops)."""
    bias = _rand_i32(rng, n, -(2**20), 2**20) if use_bias else None
    if variant == "wild" and bias is not None:
        bias = _rand_i32(rng, n)
    lo, hi = sorted(rng.integers(-128, 128, size=2).tolist())
    if rng.random() < 0.5:
        lo, hi = -128, 127
    if mode == "none":
        return ref.Requant("none", bias, None, None, None)
    mag = float(np.abs(acc.astype(np.int64)).max()) + 1.0 + (2**20 if use_bias else 0)
    if mode == "fixed":
        if variant == "sane":
            mul, shift = ref.quantize_multiplier(rng.uniform(20.0, 200.0, size=n) / mag)
        else:
            mul, shift = _rand_i32(rng, n), rng.integers(1, 63, size=n).astype(np.int32)
        return ref.Requant("fixed", bias, mul, None, shift, int(rng.integers(-128, 128)), lo, hi)
    if variant == "sane":
        mul = rng.integers(1, 2**12, size=n).astype(np.int32)
        add = _rand_i32(rng, n, -(2**16), 2**16)
        need = np.log2(mag * float(mul.max()) / 64.0)
        shift = np.clip(np.ceil(need) + rng.integers(-1, 2, size=n), 0, 31).astype(np.int32)
        out_zp = int(rng.integers(-128, 128))
    else:
        mul, add = _rand_i32(rng, n), _rand_i32(rng, n)
        shift = rng.integers(0, 32, size=n).astype(np.int32)
        out_zp = int(_rand_i32(rng, 1)[0])
    return ref.Requant("int_ops", bias, None if null_mul else mul, None if null_add else add,
                       None if null_shift else shift, out_zp, lo, hi)


def _check_gemm_s8(lib, rng, m, n, k, b_transposed, a_zp, b_zp, mode, variant="sane",
                   use_bias=True, null_mul=False, null_add=False, null_shift=False, pads=(0, 0, 0)):
    a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    b = rng.integers(-128, 128, size=(n, k) if b_transposed else (k, n), dtype=np.int8)
    acc = ref.gemm_s8(a, b, a_zp, b_zp, b_transposed=b_transposed)
    rq = _make_requant(rng, mode, variant, n, acc, use_bias, null_mul, null_add, null_shift)
    want = ref.gemm_s8(a, b, a_zp, b_zp, rq, b_transposed)
    got = c_gemm_s8(lib, a, b, a_zp, b_zp, rq, b_transposed, pads)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    return want


@HYP
@given(
    m=st.integers(1, 33), n=st.integers(1, 33), k=st.integers(1, 33),
    b_transposed=st.booleans(),
    a_zp=st.one_of(st.just(0), st.integers(-128, 127)),
    b_zp=st.one_of(st.just(0), st.integers(-128, 127)),
    mode=st.sampled_from(["none", "fixed", "int_ops"]),
    variant=st.sampled_from(["sane", "wild"]),
    use_bias=st.booleans(),
    nulls=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    pads=st.tuples(*[st.one_of(st.just(0), st.integers(1, 9))] * 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_gemm_s8_matches_reference(lib, m, n, k, b_transposed, a_zp, b_zp, mode, variant,
                                   use_bias, nulls, pads, seed):
    """pads > 0: lda > k, ldb > n (> k transposed), ldy > n, operands inside larger matrices."""
    rng = np.random.default_rng(seed)
    _check_gemm_s8(lib, rng, m, n, k, b_transposed, a_zp, b_zp, mode, variant, use_bias, *nulls,
                   pads=pads)


@pytest.mark.parametrize("mode", ["none", "fixed", "int_ops"])
@pytest.mark.parametrize("b_transposed", [False, True])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 17, 300), (5, 3, 300), (4, 6, 300), (2, 2, 0)])
def test_gemm_s8_shapes(lib, m, n, k, b_transposed, mode):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    for a_zp, b_zp in [(0, 0), (-128, 0), (0, 127), (37, -91)]:
        _check_gemm_s8(lib, rng, m, n, k, b_transposed, a_zp, b_zp, mode)
        _check_gemm_s8(lib, rng, m, n, k, b_transposed, a_zp, b_zp, mode, pads=(3, 5, 2))


@pytest.mark.parametrize("b_transposed", [False, True])
def test_gemm_s8_sub_blocks(lib, b_transposed):
    """Views of larger matrices, as the tiler hands them out: each core's share of a tile is rows
    or columns of an L1 block, written into its place in the tile. A grid of sub-GEMMs over row and
    column ranges reassembles the full product; nothing outside a sub-block's y is written."""
    rng = np.random.default_rng(21)
    m, n, k, a_zp, b_zp = 11, 13, 37, -3, 7
    a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    b = rng.integers(-128, 128, size=(n, k) if b_transposed else (k, n), dtype=np.int8)
    mul, shift = ref.quantize_multiplier(rng.uniform(0.001, 0.01, size=n))
    rq = ref.Requant("fixed", rng.integers(-5000, 5000, size=n).astype(np.int32), mul, None, shift, 3)
    want = ref.gemm_s8(a, b, a_zp, b_zp, rq, b_transposed)
    y = np.full((m + 2, n + 3), 0x5A, dtype=np.int8)
    crq_keep = {name: _i32(getattr(rq, name)) for name in ("bias", "mul", "shift")}
    for r0, r1 in [(0, 4), (4, 5), (5, 11)]:
        for c0, c1 in [(0, 1), (1, 8), (8, 13)]:
            av = a[r0:r1]  # lda = k
            bv = b[c0:c1] if b_transposed else b[:, c0:c1]  # ldb = k, or n > c1 - c0
            yv = y[1 + r0:1 + r1, 2 + c0:2 + c1]  # ldy = n + 3
            crq = CRequant(MODE["fixed"], _ptr(crq_keep["bias"][c0:], I32), _ptr(crq_keep["mul"][c0:], I32),
                           None, _ptr(crq_keep["shift"][c0:], I32), rq.out_zp, rq.lo, rq.hi)
            lib.dpl_gemm_s8(_ptr(av, ctypes.c_int8), _ld(av), _ptr(bv, ctypes.c_int8), _ld(bv),
                            int(b_transposed), yv.ctypes.data, _ld(yv), r1 - r0, c1 - c0, k, a_zp, b_zp,
                            ctypes.byref(crq))
    np.testing.assert_array_equal(y[1:1 + m, 2:2 + n], want)
    assert (_outside(y, y[1:1 + m, 2:2 + n]) == 0x5A).all()


@pytest.mark.parametrize("b_transposed", [False, True])
def test_gemm_s8_extreme_accumulator(lib, b_transposed):
    """|a - a_zp| = |b - b_zp| = 255 with the largest k allowed: acc is -65025 * k, close to -2^31,
    while the row/column-sum correction terms are large too."""
    m, n, k = 3, 3, (2**31 - 1) // 65025
    assert k * 65025 < 2**31
    a = np.full((m, k), -128, dtype=np.int8)
    b = np.full((n, k) if b_transposed else (k, n), 127, dtype=np.int8)
    got = c_gemm_s8(lib, a, b, 127, -128, ref.Requant("none", None, None, None, None), b_transposed)
    want = ref.gemm_s8(a, b, 127, -128, None, b_transposed)
    assert int(want.min()) == -65025 * k
    np.testing.assert_array_equal(got, want)
    a[1] = 127  # positive extreme in the second row
    np.testing.assert_array_equal(c_gemm_s8(lib, a, b, -128, -128, None, b_transposed),
                                  ref.gemm_s8(a, b, -128, -128, None, b_transposed))


@pytest.mark.parametrize("k", [1, 2, 7, 64, 256])
@pytest.mark.parametrize("seed", [0, 1])
def test_gemm_s8_packed_row_pairs_at_the_lane_limits(lib, k, seed):
    """Pairs of rows share one mul per weight in 16-bit lanes (gemm_s8.c, gs8_block_pair_2x8): operands at
    -128 and 127 only, every row's products at their extremes (a sum of two k steps is 32768 in the first
    row of a pair), must not carry between the lanes."""
    rng = np.random.default_rng(seed)
    a = rng.choice(np.array([-128, 127], np.int8), size=(5, k))
    a[0], a[1] = -128, 127
    b = np.full((k, 19), -128, np.int8)
    b[:, 9:] = rng.choice(np.array([-128, 127], np.int8), size=(k, 10))
    np.testing.assert_array_equal(c_gemm_s8(lib, a, b), ref.gemm_s8(a, b))
    mul, shift = ref.quantize_multiplier(np.full(19, 1.0 / (k * 16384)))
    rq = ref.Requant("fixed", None, mul, None, shift, 1)
    np.testing.assert_array_equal(c_gemm_s8(lib, a, b, requant=rq), ref.gemm_s8(a, b, requant=rq))


def test_gemm_s8_int_ops_overflow(lib):
    """The int_ops multiply, add and zero-point add wrap around like TVM int32 ops."""
    rng = np.random.default_rng(7)
    m, n, k = 5, 7, 40
    a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    b = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
    acc = ref.gemm_s8(a, b, 3, -5).astype(np.int64)
    mul = np.full(n, 2**31 - 1, dtype=np.int32)
    add = np.full(n, -(2**31), dtype=np.int32)
    shift = np.arange(n, dtype=np.int32) + 20
    assert (np.abs(acc * mul) > 2**31).any()  # the product does overflow int32
    for rq in [
        ref.Requant("int_ops", None, mul, add, shift, 2**31 - 100, -128, 127),
        ref.Requant("int_ops", _rand_i32(rng, n), mul, None, None, 0, -128, 127),
        ref.Requant("int_ops", None, None, None, None, 0, -128, 127),  # all steps NULL: clamp only
        ref.Requant("int_ops", None, None, add, None, -(2**31), -20, 30),
    ]:
        want = ref.gemm_s8(a, b, 3, -5, rq)
        np.testing.assert_array_equal(c_gemm_s8(lib, a, b, 3, -5, rq), want)
    # with shift 24 the wrapped product lands all over [-128, 127]; without the wrap-around
    # (int64 product) nearly everything would saturate
    sh24 = np.full(n, 24, dtype=np.int32)
    rq = ref.Requant("int_ops", None, np.full(n, 1640531527, dtype=np.int32), None, sh24)
    want = ref.gemm_s8(a, b, 3, -5, rq)
    np.testing.assert_array_equal(c_gemm_s8(lib, a, b, 3, -5, rq), want)
    assert len(np.unique(want)) > 20
    assert (want != np.clip((acc * 1640531527) >> 24, -128, 127)).any()


def test_gemm_s8_fixed_rounding_ties(lib):
    """acc * mul hits exact halves: round half up (toward +inf), also for negative values."""
    a = np.array([[1, -1, 3, -3, 5, -5, 0, 2]], dtype=np.int8).T.copy()  # [8, 1]
    b = np.ones((1, 1), dtype=np.int8)
    rq = ref.Requant("fixed", None, np.array([1], np.int32), None, np.array([1], np.int32))
    want = ref.gemm_s8(a, b, 0, 0, rq)
    assert want[:, 0].tolist() == [1, 0, 2, -1, 3, -2, 0, 1]
    np.testing.assert_array_equal(c_gemm_s8(lib, a, b, 0, 0, rq), want)


# ---------------------------------------------------------------------------------------------
# dpl_gemm_f32


def _assert_close_scaled(got, want):
    atol = 1e-5 * float(np.abs(want).max()) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol)


@settings(max_examples=30, deadline=None, database=None)
@given(m=st.integers(1, 33), n=st.integers(1, 33), k=st.integers(1, 70),
       b_transposed=st.booleans(), use_bias=st.booleans(),
       pads=st.tuples(*[st.one_of(st.just(0), st.integers(1, 9))] * 3), seed=st.integers(0, 2**32 - 1))
def test_gemm_f32_matches_numpy(lib, m, n, k, b_transposed, use_bias, pads, seed):
    """pads > 0: lda > k, ldb > n (> k transposed), ldy > n, operands inside larger matrices."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if b_transposed else (k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if use_bias else None
    bk = b.T if b_transposed else b
    want = a.astype(np.float64) @ bk.astype(np.float64)
    if bias is not None:
        want = want + bias
    got = c_gemm_f32(lib, a, b, bias, b_transposed, pads)
    _assert_close_scaled(got, want.astype(np.float32))


@pytest.mark.parametrize("b_transposed", [False, True])
def test_gemm_f32_sub_blocks(lib, b_transposed):
    """As test_gemm_s8_sub_blocks: a grid of sub-GEMMs on views reassembles the product."""
    rng = np.random.default_rng(22)
    m, n, k = 9, 14, 23
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if b_transposed else (k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    want = a.astype(np.float64) @ (b.T if b_transposed else b).astype(np.float64) + bias
    y = np.full((m + 1, n + 5), 12345.0, dtype=np.float32)
    for r0, r1 in [(0, 2), (2, 3), (3, 9)]:
        for c0, c1 in [(0, 5), (5, 6), (6, 14)]:
            av, bv = a[r0:r1], (b[c0:c1] if b_transposed else b[:, c0:c1])
            yv = y[r0:r1, 4 + c0:4 + c1]
            lib.dpl_gemm_f32(_ptr(av, ctypes.c_float), _ld(av), _ptr(bv, ctypes.c_float), _ld(bv),
                             int(b_transposed), _ptr(bias[c0:], ctypes.c_float), _ptr(yv, ctypes.c_float),
                             _ld(yv), r1 - r0, c1 - c0, k)
    _assert_close_scaled(y[:m, 4:4 + n], want)
    assert (_outside(y, y[:m, 4:4 + n]) == 12345.0).all()


@pytest.mark.parametrize("b_transposed", [False, True])
def test_gemm_f32_large_k(lib, b_transposed):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 300)).astype(np.float32)
    b = rng.standard_normal((5, 300) if b_transposed else (300, 5)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    want = a.astype(np.float64) @ (b.T if b_transposed else b).astype(np.float64) + bias
    _assert_close_scaled(c_gemm_f32(lib, a, b, bias, b_transposed), want)


# ---------------------------------------------------------------------------------------------
# dpl_softmax_f32


@pytest.mark.parametrize("rows,cols,scale", [(1, 1, 1.0), (4, 10, 1.0), (7, 33, 5.0), (3, 257, 20.0)])
def test_softmax_matches_reference(lib, rows, cols, scale):
    rng = np.random.default_rng(rows * cols)
    x = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
    x[0, -1] += 1000.0  # needs the max subtraction (and the max is not the first element)
    x[-1, cols // 2] += 100.0
    got = c_softmax(lib, x)
    np.testing.assert_array_equal(got.view(np.uint32), ref.softmax_f32(x).view(np.uint32))  # the same float32 steps
    x64 = x.astype(np.float64)
    exact = np.exp(x64 - x64.max(axis=1, keepdims=True))
    np.testing.assert_allclose(got, exact / exact.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
