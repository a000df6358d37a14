"""dpl_attention_tiled (c_kernels/attention_tiled.c) on the host HAL, against tvm_deeploy.offload.reference.

The host DMA copies at dpl_dma_wait and poisons destinations at start, so a schedule that reads a
block before its transfer completed, or prefetches onto a block still in use, computes wrong
results here. int8 must equal reference.attention_s8 bit for bit; fp32 is within 1e-5 of
reference.attention_f32 (float64). The DMA byte counters must equal the tiler's geometry.
"""

from __future__ import annotations

import ctypes
import dataclasses

import numpy as np
import pytest
from conftest import C_FLAGS as BASE_C_FLAGS
from conftest import HAL_HOST, KERNEL_DIR, KERNEL_SOURCES, run_checked
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvm_deeploy.emit.c import ctypes_struct
from tvm_deeploy.emit.kernel_args import ATTENTION_PLAN, DTYPE, STRIDES
from tvm_deeploy.emit.kernel_args import CAUSAL as CAUSAL_ENUM
from tvm_deeploy.offload import reference as ref
from tvm_deeploy.offload.specs import AttentionSpec, Operand, Strides
from tvm_deeploy.plan.tiling.attention import geometry

C_FLAGS = [*BASE_C_FLAGS, "-pthread"]  # the host HAL runs threads

F32, S8 = DTYPE.values["f32"], DTYPE.values["s8"]
TO_L1, TO_L2 = 0, 1
CAUSAL = CAUSAL_ENUM.values
I32, U32 = ctypes.c_int32, ctypes.c_uint32


CStrides = ctypes_struct(STRIDES)
CPlan = ctypes_struct(ATTENTION_PLAN)


@pytest.fixture(scope="module")
def lib(build_dir):
    so = build_dir / "libdpl_attention.so"
    run_checked(["gcc", *C_FLAGS, "-fPIC", "-shared", "-I", KERNEL_DIR, *KERNEL_SOURCES, HAL_HOST, "-o", so, "-lm"])
    dll = ctypes.CDLL(str(so))
    dll.dpl_attention_tiled.argtypes = [ctypes.POINTER(CPlan)] + [ctypes.c_void_p] * 7
    dll.dpl_attention_tiled.restype = None
    dll.dpl_dma_bytes.argtypes = [I32]
    dll.dpl_dma_bytes.restype = ctypes.c_uint64
    dll.dpl_dma_reset_counters.restype = None
    return dll


# ---------------------------------------------------------------------------------------------
# running the kernel on NumPy views


def _strides(view: np.ndarray | None) -> Strides:
    if view is None:
        return Strides(0, 0, 0, 0)
    assert view.ndim == 4 and all(s >= 0 for s in view.strides)
    return Strides(*(s // view.itemsize for s in view.strides))


def make_spec(q, k, v, out, mask=None, causal="none", kv_div=1, scale=1.0, quant=None) -> AttentionSpec:
    """The spec of (batch, head, seq, feature) views; k and v have kv_heads heads."""
    b, h, ql, d = q.shape
    kvh, kl, dv = k.shape[1], k.shape[2], v.shape[3]
    dtype = "int8" if q.dtype == np.int8 else "float32"
    operand = lambda x: Operand(x.shape, dtype, param=0)  # noqa: E731
    mask_operand = None if mask is None else Operand(mask.shape, "float32", 0)
    return AttentionSpec(operand(q), operand(k), operand(v), mask_operand,
                         _strides(q), _strides(k), _strides(v), None if mask is None else _strides(mask), _strides(out),
                         out.shape, b, h, kvh, ql, kl, d, dv, scale, causal, kv_div, dtype, quant)


def run_kernel(lib, spec: AttentionSpec, q, k, v, out, mask=None, *, tiles, cores=1, kv_slots=2, layout=None):
    """dpl_attention_tiled with tiles (tile_h, tile_q, tile_kv); writes `out`; returns the DMA counters."""
    geo = geometry(spec, cores)
    tile_h, tile_q, tile_kv = tiles
    offsets = layout or geo.layout(tile_h, tile_q, tile_kv, kv_slots)
    arena = offsets["end"][0]
    qt = spec.quant or ref.AttentionQuant(0, 0, 0, 0, 0, 1, 0, 0, 1)
    s = lambda x: CStrides(x.batch, x.head, x.seq, x.feat)  # noqa: E731
    plan = CPlan(
        F32 if spec.dtype == "float32" else S8, spec.batch, spec.heads, spec.kv_heads, spec.kv_div, spec.q_len,
        spec.kv_len, spec.qk_dim, spec.v_dim, CAUSAL[spec.causal], tile_h, tile_q, tile_kv,
        s(spec.q_strides), s(spec.k_strides), s(spec.v_strides), s(spec.mask_strides or Strides(0, 0, 0, 0)),
        s(spec.out_strides), *((U32 * 2)(*offsets[n]) for n in ("q", "k", "v", "mask", "o")),
        offsets["state"][0], offsets["scores"][0], offsets["lut"][0], cores, spec.scale,
        qt.q_zp, qt.k_zp, qt.v_zp, qt.out_zp, qt.exp_mul, qt.exp_shift, qt.e_shift, qt.out_mul, qt.out_shift,
        qt.lo, qt.hi)
    for name, dequant in (("k", spec.k_dequant), ("v", spec.v_dequant)):
        if dequant is not None:  # an int8 K / V dequantized in L1
            setattr(plan, f"{name}_dequant", 1)
            setattr(plan, f"l1_{name}_f32", offsets[f"{name}_f32"][0])
            setattr(plan, f"{name}_dq_scale", dequant.scale)
            setattr(plan, f"{name}_dq_zp", dequant.zp)
    guard = 64
    l1 = np.random.default_rng(arena).integers(0, 256, size=arena + 2 * guard, dtype=np.uint8)
    canary = l1.copy()
    lut = np.ascontiguousarray(ref.EXP2_LUT)
    lib.dpl_dma_reset_counters()
    lib.dpl_attention_tiled(ctypes.byref(plan), l1.ctypes.data + guard, q.ctypes.data, k.ctypes.data, v.ctypes.data,
                            None if mask is None else mask.ctypes.data, out.ctypes.data, lut.ctypes.data)
    assert (l1[:guard] == canary[:guard]).all() and (l1[-guard:] == canary[-guard:]).all(), "wrote outside L1"
    return (int(lib.dpl_dma_bytes(TO_L1)), int(lib.dpl_dma_bytes(TO_L2))), geo.dma_bytes(tile_h, tile_q, tile_kv)


def bhsd(rng, shape, dtype, layout):
    """A (batch, head, seq, feature) view of a fresh array stored as `layout`: "bhsd", "bshd" (heads
    side by side in each row), "bhds" (feature-major: seq stride 1) or "gap" (rows padded)."""
    b, h, s, d = shape
    make = (lambda sh: rng.standard_normal(sh).astype(np.float32)) if dtype == "float32" else \
        (lambda sh: rng.integers(-128, 128, sh).astype(np.int8))
    if layout == "bshd":
        return make((b, s, h, d)).transpose(0, 2, 1, 3)
    if layout == "bhds":
        return make((b, h, d, s)).transpose(0, 1, 3, 2)
    if layout == "gap":
        return make((b, h, s, d + 3))[..., 1:d + 1]
    return make((b, h, s, d))


def empty_out(shape, dtype, layout):
    b, h, s, d = shape
    fill = np.nan if dtype == "float32" else 77
    if layout == "bshd":
        return np.full((b, s, h, d), fill, dtype).transpose(0, 2, 1, 3)
    if layout == "bhds":
        return np.full((b, h, d, s), fill, dtype).transpose(0, 1, 3, 2)
    return np.full((b, h, s, d), fill, dtype)


def quant_for(rng, q, k, v, scale):
    return ref.attention_quant(rng.uniform(0.01, 0.1), rng.uniform(0.01, 0.1), 0.02, rng.uniform(0.002, 0.02),
                               int(rng.integers(-5, 6)), int(rng.integers(-5, 6)), int(rng.integers(-5, 6)),
                               int(rng.integers(-5, 6)), scale, k.shape[2])


LAYOUTS = st.sampled_from(["bhsd", "bshd", "bhds", "gap"])


@settings(max_examples=70, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dtype=st.sampled_from(["float32", "int8"]), batch=st.integers(1, 2),
       kv_heads=st.integers(1, 3), group=st.integers(1, 3), modulo=st.booleans(), q_len=st.integers(1, 13),
       kv_len=st.integers(1, 21), d=st.integers(1, 9), dv=st.integers(1, 7),
       causal=st.sampled_from(["none", "top_left", "bottom_right"]), cores=st.sampled_from([1, 3, 8]),
       kv_slots=st.sampled_from([1, 2]), layouts=st.tuples(LAYOUTS, LAYOUTS, LAYOUTS, LAYOUTS),
       mask_kind=st.sampled_from([None, "full", "rows", "keys", "heads"]), seed=st.integers(0, 2**32 - 1))
def test_tiled_matches_reference(lib, data, dtype, batch, kv_heads, group, modulo, q_len, kv_len, d, dv, causal,
                                 cores, kv_slots, layouts, mask_kind, seed):
    rng = np.random.default_rng(seed)
    heads = kv_heads * group
    kv_div = 1 if modulo else group
    tiles = (data.draw(st.integers(1, heads), label="tile_h"), data.draw(st.integers(1, q_len), label="tile_q"),
             data.draw(st.integers(1, kv_len), label="tile_kv"))
    q = bhsd(rng, (batch, heads, q_len, d), dtype, layouts[0])
    k = bhsd(rng, (batch, kv_heads, kv_len, d), dtype, layouts[1])
    v = bhsd(rng, (batch, kv_heads, kv_len, dv), dtype, layouts[2])
    out = empty_out((batch, heads, q_len, dv), dtype, layouts[3])
    scale = float(rng.uniform(0.1, 0.6))
    mask = None
    if dtype == "float32" and mask_kind:
        shape = {"full": (batch, heads, q_len, kv_len), "rows": (1, 1, q_len, 1), "keys": (1, 1, 1, kv_len),
                 "heads": (1, heads, q_len, kv_len)}[mask_kind]
        m = rng.standard_normal(shape).astype(np.float32)
        m[m < -1.2] = -np.inf
        mask = np.broadcast_to(m, (batch, heads, q_len, kv_len))
    quant = quant_for(rng, q, k, v, scale) if dtype == "int8" else None
    spec = make_spec(q, k, v, out, mask, causal, kv_div, scale, quant)
    counters, predicted = run_kernel(lib, spec, q, k, v, out, mask, tiles=tiles, cores=cores, kv_slots=kv_slots)
    if dtype == "int8":
        np.testing.assert_array_equal(out, ref.attention_s8(q, k, v, quant, causal, kv_heads, kv_div))
    else:
        want = ref.attention_f32(q, k, v, scale, mask, causal, kv_heads, kv_div)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max() or 1))
    if mask is None:
        assert counters == predicted
    else:  # keys the mask hides from every row of a tile are not fetched
        assert counters[0] <= predicted[0] and counters[1] == predicted[1]


@settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), batch=st.integers(1, 2), kv_heads=st.integers(1, 3), group=st.integers(1, 3),
       modulo=st.booleans(), q_len=st.integers(1, 5), kv_len=st.integers(1, 40), d=st.sampled_from([1, 3, 4, 8, 16]),
       same_dv=st.booleans(), causal=st.sampled_from(["none", "top_left", "bottom_right"]),
       cores=st.sampled_from([1, 3, 8]), kv_slots=st.sampled_from([1, 2]), layouts=st.tuples(LAYOUTS, LAYOUTS),
       int8=st.sampled_from(["k", "v", "kv"]), mask_kind=st.sampled_from([None, "position", "full"]),
       seed=st.integers(0, 2**32 - 1))
def test_int8_kv_equals_fp32_over_the_dequantized_kv(lib, data, batch, kv_heads, group, modulo, q_len, kv_len, d,
                                                     same_dv, causal, cores, kv_slots, layouts, int8, mask_kind, seed):
    """An fp32 attention reading K and/or V as int8 (dequantized block by block in L1) computes bit for bit
    what it computes over the dequantized tensors, and moves a quarter of their bytes."""
    rng = np.random.default_rng(seed)
    heads = kv_heads * group
    kv_div = 1 if modulo else group
    dv = d if same_dv else data.draw(st.integers(1, 7), label="dv")
    tiles = (data.draw(st.integers(1, heads), label="tile_h"), data.draw(st.integers(1, q_len), label="tile_q"),
             data.draw(st.integers(1, kv_len), label="tile_kv"))
    q = bhsd(rng, (batch, heads, q_len, d), "float32", "bhsd")
    operands, dequant, floats = {}, {}, {}
    for name, dim, layout in (("k", d, layouts[0]), ("v", dv, layouts[1])):
        floats[name] = bhsd(rng, (batch, kv_heads, kv_len, dim), "float32", layout)
        operands[name] = floats[name]
        if name in int8:
            operands[name] = bhsd(rng, floats[name].shape, "int8", layout)
            dequant[name] = ref.Quant(float(np.float32(rng.uniform(0.001, 0.2))), int(rng.integers(-128, 128)))
            floats[name][...] = ref.dequantize_s8(operands[name], dequant[name])
    mask = None
    if mask_kind == "position":  # a decode step's run-time mask: the cache up to a position
        seen = data.draw(st.integers(0, kv_len), label="seen")
        row = np.where(np.arange(kv_len) < seen, 0.0, -np.inf).astype(np.float32).reshape(1, 1, 1, kv_len)
        mask = np.broadcast_to(row, (batch, heads, q_len, kv_len))
    elif mask_kind == "full":
        m = rng.standard_normal((batch, heads, q_len, kv_len)).astype(np.float32)
        m[m < -1.2] = -np.inf
        mask = m
    scale = float(rng.uniform(0.1, 0.6))
    out_f32, out = (empty_out((batch, heads, q_len, dv), "float32", "bhsd") for _ in range(2))
    spec_f32 = make_spec(q, floats["k"], floats["v"], out_f32, mask, causal, kv_div, scale)
    run_kernel(lib, spec_f32, q, floats["k"], floats["v"], out_f32, mask, tiles=tiles, cores=cores,
               kv_slots=kv_slots)
    spec = dataclasses.replace(
        make_spec(q, operands["k"], operands["v"], out, mask, causal, kv_div, scale),
        k=Operand(operands["k"].shape, operands["k"].dtype.name, 0), v=Operand(operands["v"].shape,
                                                                               operands["v"].dtype.name, 0),
        k_dequant=dequant.get("k"), v_dequant=dequant.get("v"))
    counters, predicted = run_kernel(lib, spec, q, operands["k"], operands["v"], out, mask, tiles=tiles, cores=cores,
                                     kv_slots=kv_slots)
    np.testing.assert_array_equal(out, out_f32)
    if mask is None:
        assert counters == predicted
    else:
        assert counters[0] <= predicted[0] and counters[1] == predicted[1]


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kv_heads=st.integers(1, 3), group=st.integers(1, 3), q_len=st.integers(1, 3),
       context=st.integers(2, 40), cores=st.sampled_from([1, 3, 8]), seed=st.integers(0, 2**32 - 1))
def test_keys_hidden_by_the_mask_are_skipped(lib, data, kv_heads, group, q_len, context, cores, seed):
    """A decode step over a fixed-size cache: the mask hides every key after the position. The kernel
    reads only the keys up to it, so its result and DMA bytes are those of attention over the cache cut
    there (bit for bit)."""
    rng = np.random.default_rng(seed)
    heads = kv_heads * group
    seen = data.draw(st.integers(0, context), label="seen")
    tiles = (data.draw(st.integers(1, heads), label="tile_h"), data.draw(st.integers(1, q_len), label="tile_q"),
             data.draw(st.integers(1, context), label="tile_kv"))
    q = rng.standard_normal((1, heads, q_len, 4)).astype(np.float32)
    k = rng.standard_normal((1, kv_heads, context, 4)).astype(np.float32)
    v = rng.standard_normal((1, kv_heads, context, 3)).astype(np.float32)
    row = np.where(np.arange(context) < seen, 0.0, -np.inf).astype(np.float32).reshape(1, 1, 1, context)
    mask = np.broadcast_to(row, (1, heads, q_len, context))
    out = np.empty((1, heads, q_len, 3), np.float32)
    counters, _ = run_kernel(lib, make_spec(q, k, v, out, mask, "none", group, 0.5, None), q, k, v, out, mask,
                             tiles=tiles, cores=cores)
    cut = [np.ascontiguousarray(x[:, :, :max(seen, 1)]) for x in (k, v)]
    cut_mask = np.broadcast_to(row[..., :max(seen, 1)], (1, heads, q_len, max(seen, 1)))
    cut_out = np.empty_like(out)
    cut_tiles = (tiles[0], tiles[1], min(tiles[2], max(seen, 1)))
    cut_counters, _ = run_kernel(lib, make_spec(q, *cut, cut_out, cut_mask, "none", group, 0.5, None), q, *cut,
                                 cut_out, cut_mask, tiles=cut_tiles, cores=cores)
    np.testing.assert_array_equal(out, cut_out)
    if seen:
        assert counters[1] == cut_counters[1]
        assert counters[0] == cut_counters[0]
    else:  # no key visible: no K, V or mask traffic, zeros out
        assert not out.any()


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), heads=st.integers(1, 4), q_len=st.integers(1, 3), kv_len=st.integers(1, 70),
       cores=st.sampled_from([1, 3, 8]), mask_axes=st.sampled_from(["keys", "rows", "heads"]),
       seed=st.integers(0, 2**32 - 1))
def test_mask_end_found_by_the_cores_together(lib, data, heads, q_len, kv_len, cores, mask_axes, seed):
    """Masks with holes, whose last visible key lies in any core's share of the keys (or nowhere): the
    kernel fetches the keys up to the last one some row of the head block sees and equals the reference."""
    rng = np.random.default_rng(seed)
    last = data.draw(st.integers(0, kv_len), label="keys up to the last visible one")
    tile_h = data.draw(st.integers(1, heads), label="tile_h")
    shape = {"keys": (1, 1, 1, kv_len), "rows": (1, 1, q_len, kv_len), "heads": (1, heads, q_len, kv_len)}[mask_axes]
    m = np.where(rng.random(shape) < 0.4, -np.inf, rng.standard_normal(shape)).astype(np.float32)
    m[..., last:] = -np.inf
    if last:
        m[(0,) * (len(shape) - 1) + (last - 1,)] = 0.0  # the first row of the first head sees key last - 1
    mask = np.broadcast_to(m, (1, heads, q_len, kv_len))
    q, k, v = (bhsd(rng, s, "float32", "bhsd") for s in ((1, heads, q_len, 8), (1, heads, kv_len, 8),
                                                         (1, heads, kv_len, 8)))
    out = empty_out((1, heads, q_len, 8), "float32", "bhsd")
    spec = make_spec(q, k, v, out, mask, scale=0.5)
    counters, predicted = run_kernel(lib, spec, q, k, v, out, mask, tiles=(tile_h, q_len, kv_len), cores=cores)
    want = ref.attention_f32(q, k, v, 0.5, mask)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max() or 1))
    assert counters[0] <= predicted[0] and counters[1] == predicted[1]
    if not last:
        assert not out.any()
    elif mask_axes != "heads":  # every head block's keys end at `last`: the traffic and result of the cut cache
        cut = [np.ascontiguousarray(x[:, :, :last]) for x in (k, v)]
        cut_mask = np.broadcast_to(m[..., :last], (1, heads, q_len, last))
        cut_out = empty_out((1, heads, q_len, 8), "float32", "bhsd")
        cut_counters, _ = run_kernel(lib, make_spec(q, *cut, cut_out, cut_mask, scale=0.5), q, *cut, cut_out,
                                     cut_mask, tiles=(tile_h, q_len, last), cores=cores)
        np.testing.assert_array_equal(out, cut_out)
        assert counters == cut_counters


@pytest.mark.parametrize("cores", [1, 3, 8])
@pytest.mark.parametrize("seen", [0, 1, 7, 20, 64])
def test_a_mask_of_zeros_up_to_its_end_is_dropped(lib, seen, cores):
    """A decode step's mask (one row: +-0 up to the position, -inf after it) adds nothing to the keys it
    shows: the kernel neither fetches nor adds it, so it moves the bytes, and computes the result bit for
    bit, of attention over the cache cut there without a mask. A single non-zero key keeps the mask."""
    rng = np.random.default_rng(seen + cores)
    context, heads, kv_heads = 64, 8, 4
    q = rng.standard_normal((1, heads, 1, 8)).astype(np.float32)
    k, v = (rng.standard_normal((1, kv_heads, context, 8)).astype(np.float32) for _ in range(2))
    row = np.where(np.arange(context) < seen, 0.0, -np.inf).astype(np.float32)
    row[:seen:3] = -0.0
    mask = np.broadcast_to(row.reshape(1, 1, 1, context), (1, heads, 1, context))
    out = empty_out((1, heads, 1, 8), "float32", "bhsd")
    counters, _ = run_kernel(lib, make_spec(q, k, v, out, mask, kv_div=2, scale=0.35), q, k, v, out, mask,
                             tiles=(heads, 1, 32), cores=cores)
    if not seen:
        assert not out.any() and counters == (heads * 8 * 4, heads * 8 * 4)
        return
    cut = [np.ascontiguousarray(x[:, :, :seen]) for x in (k, v)]
    cut_out = empty_out((1, heads, 1, 8), "float32", "bhsd")
    cut_counters, _ = run_kernel(lib, make_spec(q, *cut, cut_out, kv_div=2, scale=0.35), q, *cut, cut_out,
                                 tiles=(heads, 1, min(32, seen)), cores=cores)
    np.testing.assert_array_equal(out, cut_out)
    assert counters == cut_counters
    row[seen - 1] = 0.5  # now the mask changes a score: fetched (one element per key) and added
    kept = empty_out((1, heads, 1, 8), "float32", "bhsd")
    kept_counters, _ = run_kernel(lib, make_spec(q, k, v, kept, mask, kv_div=2, scale=0.35), q, k, v, kept, mask,
                                  tiles=(heads, 1, 32), cores=cores)
    assert kept_counters[0] == cut_counters[0] + 4 * seen
    np.testing.assert_allclose(kept, ref.attention_f32(q, k, v, 0.35, mask, kv_heads=kv_heads), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("d", [4, 8, 16])
@pytest.mark.parametrize("cores", [1, 3])
def test_register_rows_equal_the_strided_rows(lib, d, cores):
    """Head dims 4, 8 and 16 with features contiguous in L1 run the register-blocked row, other layouts
    the strided one: the same operations in the same order, so bit for bit the same result (over
    several key blocks, with a mask and causal rows)."""
    rng = np.random.default_rng(d + cores)
    shapes = ((1, 4, 6, d), (1, 2, 11, d), (1, 2, 11, d))
    m = rng.standard_normal((1, 1, 6, 11)).astype(np.float32)
    m[m < -1.0] = -np.inf
    mask = np.broadcast_to(m, (1, 4, 6, 11))
    q, k, v = (bhsd(rng, s, "float32", "bhsd") for s in shapes)
    feature_major = [np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2) for x in (q, k, v)]
    outs = []
    for q, k, v in ((q, k, v), feature_major):  # feature-major: strided features in L1, the strided row
        out = empty_out((1, 4, 6, d), "float32", "bhsd")
        spec = make_spec(q, k, v, out, mask, causal="bottom_right", kv_div=2, scale=0.4)
        run_kernel(lib, spec, q, k, v, out, mask, tiles=(3, 4, 4), cores=cores)
        outs.append(out.copy())
    np.testing.assert_array_equal(outs[0], outs[1])
    want = ref.attention_f32(q, k, v, 0.4, mask, "bottom_right", 2, 2)
    np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_rows_that_see_no_key(lib, dtype):
    """Bottom-right causal with more queries than keys: the first rows see nothing (0, or out_zp)."""
    rng = np.random.default_rng(3)
    q, k, v = (bhsd(rng, s, dtype, "bhsd") for s in ((1, 2, 9, 4), (1, 2, 4, 4), (1, 2, 4, 3)))
    out = empty_out((1, 2, 9, 3), dtype, "bhsd")
    quant = quant_for(rng, q, k, v, 0.5) if dtype == "int8" else None
    spec = make_spec(q, k, v, out, causal="bottom_right", scale=0.5, quant=quant)
    counters, predicted = run_kernel(lib, spec, q, k, v, out, tiles=(1, 2, 3), cores=3)
    assert counters == predicted
    assert (out[:, :, :5] == (0 if dtype == "float32" else quant.out_zp)).all()
    if dtype == "int8":
        np.testing.assert_array_equal(out, ref.attention_s8(q, k, v, quant, "bottom_right"))


def test_int8_result_does_not_depend_on_the_blocking(lib):
    """Two passes over key blocks (exact maximum, then exact integer sums) equal one block."""
    rng = np.random.default_rng(4)
    q, k, v = (bhsd(rng, s, "int8", "bhsd") for s in ((1, 2, 5, 8), (1, 2, 40, 8), (1, 2, 40, 8)))
    quant = quant_for(rng, q, k, v, 0.35)
    results = []
    for tiles in ((2, 5, 40), (1, 2, 7), (2, 1, 1)):
        out = empty_out((1, 2, 5, 8), "int8", "bhsd")
        run_kernel(lib, make_spec(q, k, v, out, scale=0.35, quant=quant), q, k, v, out, tiles=tiles, cores=2)
        results.append(out.copy())
    np.testing.assert_array_equal(results[0], ref.attention_s8(q, k, v, quant))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_overlapping_q_slots_are_caught(lib):
    """A plan whose two Q slots coincide prefetches the next row tile's Q over the one its last key
    block still reads (row tiles of three key blocks: the Q in use was waited steps before)."""
    rng = np.random.default_rng(5)
    q, k, v = (bhsd(rng, s, "float32", "bhsd") for s in ((1, 2, 8, 4), (1, 2, 8, 4), (1, 2, 8, 4)))
    out = empty_out((1, 2, 8, 4), "float32", "bhsd")
    spec = make_spec(q, k, v, out, scale=0.5)
    geo = geometry(spec, 2)
    good = geo.layout(1, 4, 3)
    run_kernel(lib, spec, q, k, v, out, tiles=(1, 4, 3), cores=2, layout=good)
    want = ref.attention_f32(q, k, v, 0.5)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    broken = dict(good, q=(good["q"][0], good["q"][0]))
    run_kernel(lib, spec, q, k, v, out, tiles=(1, 4, 3), cores=2, layout=broken)
    assert not np.allclose(out, want, rtol=1e-3, atol=1e-3)


def test_row_of_minus_inf_mask_is_zero(lib):
    rng = np.random.default_rng(6)
    q, k, v = (bhsd(rng, s, "float32", "bhsd") for s in ((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4)))
    m = np.zeros((1, 1, 3, 5), np.float32)
    m[0, 0, 2] = -np.inf
    m[0, 0, 1, :3] = -np.inf  # -inf in the first key block, finite later: the online maximum starts late
    mask = np.broadcast_to(m, (1, 2, 3, 5))
    out = empty_out((1, 2, 3, 4), "float32", "bhsd")
    run_kernel(lib, make_spec(q, k, v, out, mask, scale=0.5), q, k, v, out, mask, tiles=(1, 3, 2), cores=2)
    np.testing.assert_allclose(out, ref.attention_f32(q, k, v, 0.5, mask), rtol=1e-5, atol=1e-6)
    assert (out[:, :, 2] == 0).all()


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("causal", ["top_left", "bottom_right"])
def test_hidden_keys_do_not_matter(lib, dtype, causal):
    """Keys a query cannot see have weight exactly 0: changing them changes nothing."""
    rng = np.random.default_rng(7)
    q, k, v = (bhsd(rng, s, dtype, "bhsd") for s in ((1, 2, 6, 8), (1, 2, 9, 8), (1, 2, 9, 5)))
    quant = quant_for(rng, q, k, v, 0.35) if dtype == "int8" else None
    first_hidden = 1 if causal == "top_left" else 1 + 9 - 6  # the first key query 0 cannot see
    outs = []
    for fill in (None, 100):
        k2, v2 = k.copy(), v.copy()
        if fill is not None:
            k2[:, :, first_hidden:], v2[:, :, first_hidden:] = fill, fill
        out = empty_out((1, 2, 6, 5), dtype, "bhsd")
        run_kernel(lib, make_spec(q, k2, v2, out, causal=causal, scale=0.35, quant=quant), q, k2, v2, out,
                   tiles=(2, 2, 2), cores=3)
        outs.append(out[:, :, 0].copy())
    np.testing.assert_array_equal(outs[0], outs[1])


# ---------------------------------------------------------------------------------------------
# the tiler's plans, and the integer softmax's error


def _plan_layout(plan):
    return {"q": plan.l1_q, "k": plan.l1_k, "v": plan.l1_v, "mask": plan.l1_mask, "o": plan.l1_o,
            "state": (plan.l1_state,) * 2, "scores": (plan.l1_scores,) * 2, "lut": (plan.l1_lut,) * 2,
            "end": (plan.l1_bytes,) * 2}


DECODE_LENGTHS = [1, 2, 3, 5, 8, 16, 17, 31, 63, 64, 65, 100, 127, 128, 129, 200, 255, 256, 257, 300, 384, 511, 512]


@pytest.mark.parametrize("l1_kib", [256, 4])
@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("model", ["microLlama", "stories260K"])
def test_decode_lengths_with_the_tilers_plans(lib, model, dtype, l1_kib):
    """One query token against caches of L = 1..256 (microLlama, 16 heads of 4) or 1..512 (stories260K,
    8 heads over 4 K/V heads of 8), tiled by the tiler for L1 = 256 KiB (everything resident) and
    4 KiB (key blocks): the kernel equals the reference and moves the bytes the plan says."""
    from tvm_deeploy.plan.tiling import tile_attention
    from tvm_deeploy.targets.platforms import KIB, get_platform

    heads, kv_heads, d, longest = (16, 16, 4, 256) if model == "microLlama" else (8, 4, 8, 512)
    platform = get_platform("siracusa").with_overrides(l1_bytes=l1_kib * KIB)
    rng = np.random.default_rng(l1_kib + len(model))
    blocked = 0
    for kv_len in (n for n in DECODE_LENGTHS if n <= longest):
        q = bhsd(rng, (1, heads, 1, d), dtype, "bshd")
        k, v = (bhsd(rng, (1, kv_heads, kv_len, d), dtype, "bhsd") for _ in range(2))
        out = empty_out((1, heads, 1, d), dtype, "bshd")
        quant = quant_for(rng, q, k, v, 1 / np.sqrt(d)) if dtype == "int8" else None
        spec = make_spec(q, k, v, out, kv_div=heads // kv_heads, scale=1 / np.sqrt(d), quant=quant)
        plan = tile_attention(spec, platform)
        assert plan.l1_bytes <= platform.l1_bytes
        blocked += plan.tile_kv < kv_len
        counters, predicted = run_kernel(lib, spec, q, k, v, out, tiles=(plan.tile_h, plan.tile_q, plan.tile_kv),
                                         cores=8, layout=_plan_layout(plan))
        assert counters == predicted == (plan.dma_in_bytes, plan.dma_out_bytes)
        if dtype == "int8":
            np.testing.assert_array_equal(out, ref.attention_s8(q, k, v, quant, "none", kv_heads))
        else:
            want = ref.attention_f32(q, k, v, 1 / np.sqrt(d), kv_heads=kv_heads)
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    assert blocked > 0 or l1_kib != 4


@pytest.mark.parametrize("seed", [0, 1])
def test_int8_softmax_error_against_float(seed):
    """The integer softmax stays within 2 LSB (in fact 1) of float attention of the same int8 inputs,
    on flat and on nearly one-hot softmax rows, at microLlama and stories260K shapes."""
    from tvm_deeploy.offload import accuracy

    for f in accuracy.study(seed):
        print(f"{f.kind:6} {f.shape} {f.causal:9} max {f.max_lsb} LSB, mean {f.mean_lsb:.4f} LSB "
              f"({f.differing:.2%} differ); unrounded max {f.max_real_lsb:.3f}, peak weight {f.peak_weight:.2f}")
        assert f.max_lsb <= 2 and f.mean_lsb < 0.1
        assert f.max_real_lsb < 1.0
        assert (f.peak_weight > 0.9) == (f.kind == "peaked")
