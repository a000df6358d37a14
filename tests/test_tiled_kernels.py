"""dpl_gemm_tiled (c_kernels/gemm_tiled.c) on the host HAL (c_kernels/hal/host.c).

The host DMA copies at dpl_dma_wait, not at start, and poisons the destination at start, so a
schedule that reads an L1 block before waiting for it, reuses a buffer whose out-transfer has not
been waited, or fetches into a block still in use computes wrong results here: exact comparison
with the untiled GEMM checks the double buffering, not only the arithmetic.
The DMA byte counters are compared with `predicted_dma_bytes`, the formula the tiler uses.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess

import numpy as np
import pytest
from conftest import C_FLAGS as BASE_C_FLAGS
from conftest import HAL_HOST, KERNEL_DIR, KERNEL_SOURCES, run_c_program, run_checked
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvm_deeploy.emit.c import ctypes_struct
from tvm_deeploy.emit.kernel_args import DTYPE, GEMM_PLAN, REQUANT, REQUANT_MODE
from tvm_deeploy.offload import reference as ref

C_FLAGS = [*BASE_C_FLAGS, "-pthread"]  # the host HAL runs threads

F32, S8 = DTYPE.values["f32"], DTYPE.values["s8"]
TO_L1, TO_L2 = 0, 1
MODE = REQUANT_MODE.values
ALIGN = 8  # every L1 slot starts at a multiple of 8 bytes

I32 = ctypes.c_int32
U32 = ctypes.c_uint32
P_I32 = ctypes.POINTER(ctypes.c_int32)


CRequant = ctypes_struct(REQUANT)
CPlan = ctypes_struct(GEMM_PLAN)


class CDmaJob(ctypes.Structure):
    _fields_ = [("dst", ctypes.c_void_p), ("src", ctypes.c_void_p), ("row_bytes", U32), ("rows", U32),
                ("dst_stride", U32), ("src_stride", U32), ("direction", I32), ("pending", I32)]


# ---------------------------------------------------------------------------------------------
# the DMA traffic of the schedule


def out_elem_bytes(dtype: int, requant_mode: str | None) -> int:
    """Bytes of one Y element: f32 4; s8 4 (int32) without requantization (rq NULL or mode none), else 1."""
    if dtype == F32 or requant_mode in (None, "none"):
        return 4
    return 1


def predicted_dma_bytes(dtype: int, m: int, n: int, k: int, tile_m: int, tile_n: int, batch: int,
                        a_batch_offsets=None, b_batch_offsets=None, out_elem: int = 4) -> tuple[int, int]:
    """(bytes L2 -> L1, bytes L1 -> L2) that dpl_gemm_tiled moves for a plan.

    Tiles run for b in batch, mi in ceil(m / tile_m), ni in ceil(n / tile_n) (ni fastest); an edge
    tile has rows = min(tile_m, m - mi * tile_m), cols = min(tile_n, n - ni * tile_n). A tile
    fetches its A block (rows x k) only when (A offset of b, mi) differs from the previous tile's,
    and its B block (k x cols; the B layout does not change the bytes) only when (B offset of b, ni)
    differs from the previous tile's; the first tile fetches both. Every tile's Y goes out once.
    Offsets None mean contiguous batches (b * m * k, b * k * n)."""
    elem = 4 if dtype == F32 else 1
    a_off = list(a_batch_offsets) if a_batch_offsets is not None else [b * m * k for b in range(batch)]
    b_off = list(b_batch_offsets) if b_batch_offsets is not None else [b * k * n for b in range(batch)]
    to_l1 = 0
    prev_a = prev_b = None
    for b in range(batch):
        for mi in range(-(-m // tile_m)):
            rows = min(tile_m, m - mi * tile_m)
            for ni in range(-(-n // tile_n)):
                cols = min(tile_n, n - ni * tile_n)
                if (a_off[b], mi) != prev_a:
                    to_l1 += rows * k * elem
                    prev_a = (a_off[b], mi)
                if (b_off[b], ni) != prev_b:
                    to_l1 += k * cols * elem
                    prev_b = (b_off[b], ni)
    to_l2 = batch * m * n * out_elem
    return to_l1, to_l2


# ---------------------------------------------------------------------------------------------
# build

# A test-only C snippet: fork/barrier checks, and programs that must abort.
FORK_TEST_C = r"""
#include "dpl_hal.h"

#define FB_MAX 64
typedef struct fb_state {
  int32_t rounds;
  volatile int32_t slot[FB_MAX];
  int32_t errors[FB_MAX], count[FB_MAX];
  const void *tls[FB_MAX];
} fb_state_t;

static __thread int fb_marker; /* its address tells threads apart */

static void fb_task(void *arg) {
  fb_state_t *s = (fb_state_t *)arg;
  const int32_t id = dpl_core_id(), cores = dpl_core_count();
  int32_t r, j;
  s->count[id] = cores;
  s->tls[id] = &fb_marker;
  for (r = 0; r < s->rounds; ++r) {
    s->slot[id] = r * 1000 + id;  /* write my id */
    dpl_barrier();
    for (j = 0; j < cores; ++j)   /* everyone's id of this round is visible */
      if (s->slot[j] != r * 1000 + j) s->errors[id]++;
    dpl_barrier();                /* nobody writes the next round before all have read */
  }
}

/* out: [errors, cores that saw dpl_core_count() == cores, distinct threads, id and count after] */
void fb_run(int32_t cores, int32_t rounds, int32_t *out) {
  fb_state_t s;
  int32_t i, j;
  for (i = 0; i < FB_MAX; ++i) { s.slot[i] = -1; s.errors[i] = 0; s.count[i] = 0; s.tls[i] = 0; }
  s.rounds = rounds;
  dpl_cluster_fork(cores, fb_task, &s);
  out[0] = out[1] = out[2] = 0;
  for (i = 0; i < cores; ++i) {
    int32_t fresh = 1;
    out[0] += s.errors[i];
    out[1] += s.count[i] == cores;
    for (j = 0; j < i; ++j) fresh &= s.tls[j] != s.tls[i];
    out[2] += fresh;
  }
  out[3] = dpl_core_id();
  out[4] = dpl_core_count();
}
"""

ABORT_TEST_C = r"""
#include <stdio.h>
#include <string.h>
#include "dpl_hal.h"

static void inner(void *arg) { (void)arg; }
static void outer(void *arg) { (void)arg; if (dpl_core_id() == 1) dpl_cluster_fork(2, inner, 0); }

static unsigned char src[140000], dst[140000];

int main(int argc, char **argv) {
  dpl_dma_job_t job;
  memset(&job, 0, sizeof job);
  if (argc != 2) return 2;
  if (!strcmp(argv[1], "nested")) {
    dpl_cluster_fork(2, outer, 0);
  } else if (!strcmp(argv[1], "pending")) {
    dpl_dma_start_1d(&job, dst, src, 16, DPL_DMA_TO_L1);
    dpl_dma_start_1d(&job, dst + 16, src + 16, 16, DPL_DMA_TO_L1);
  } else if (!strcmp(argv[1], "big")) {
    dpl_dma_start_2d(&job, dst, src, 1024, 128, 1024, 1024, DPL_DMA_TO_L1); /* exactly 128 KiB: fine */
    dpl_dma_wait(&job);
    puts("128 KiB ok");
    fflush(stdout);
    dpl_dma_start_2d(&job, dst, src, 1024, 128, 1024, 1024, DPL_DMA_TO_L2);
    dpl_dma_wait(&job);
    dpl_dma_start_1d(&job, dst, src, 131073, DPL_DMA_TO_L1);
  }
  puts("returned");
  return 0;
}
"""

LAYOUT_C = r"""
#include <stddef.h>
#include <stdio.h>
#include "dpl_kernels.h"
#define P(x) printf("%u\n", (unsigned)(x))
int main(void) {
  P(sizeof(dpl_dma_job_t)); P(offsetof(dpl_dma_job_t, row_bytes)); P(offsetof(dpl_dma_job_t, pending));
  return 0;
}
"""


@pytest.fixture(scope="module")
def lib(build_dir):
    snippet = build_dir / "fork_test.c"
    snippet.write_text(FORK_TEST_C)
    so = build_dir / "libdpl_tiled.so"
    # host.c defines its own POSIX feature macro; the snippet needs none
    run_checked(["gcc", *C_FLAGS, "-fPIC", "-shared", "-I", KERNEL_DIR, *KERNEL_SOURCES, HAL_HOST, snippet,
          "-o", so, "-lm"])
    dll = ctypes.CDLL(str(so))
    dll.dpl_gemm_tiled.argtypes = [ctypes.POINTER(CPlan), ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.POINTER(CRequant)]
    dll.dpl_gemm_tiled.restype = None
    dll.dpl_dma_bytes.argtypes = [I32]
    dll.dpl_dma_bytes.restype = ctypes.c_uint64
    dll.dpl_dma_reset_counters.argtypes = []
    dll.dpl_dma_reset_counters.restype = None
    p_job = ctypes.POINTER(CDmaJob)
    dll.dpl_dma_start_1d.argtypes = [p_job, ctypes.c_void_p, ctypes.c_void_p, U32, I32]
    dll.dpl_dma_start_2d.argtypes = [p_job, ctypes.c_void_p, ctypes.c_void_p, U32, U32, U32, U32, I32]
    dll.dpl_dma_wait.argtypes = [p_job]
    dll.fb_run.argtypes = [I32, I32, P_I32]
    dll.fb_run.restype = None
    return dll


def dma_counters(lib) -> tuple[int, int]:
    return int(lib.dpl_dma_bytes(TO_L1)), int(lib.dpl_dma_bytes(TO_L2))


def test_dma_job_layout_matches_ctypes(build_dir):
    got = [int(x) for x in run_c_program(build_dir, "layout", LAYOUT_C, "-I", KERNEL_DIR).split()]
    assert got == [ctypes.sizeof(CDmaJob), CDmaJob.row_bytes.offset, CDmaJob.pending.offset]


# ---------------------------------------------------------------------------------------------
# running a plan


def _i32p(arr):
    return None if arr is None else arr.ctypes.data_as(P_I32)


def _align(x: int) -> int:
    return -(-x // ALIGN) * ALIGN


def l1_layout(rng, dtype, k, tile_m, tile_n, out_elem, single=""):
    """The A, B and Y slots (two each; one for each operand named in `single`, which is then
    single-buffered) in random order, packed (each 8-byte aligned) into an arena sized exactly to
    fit. Returns (l1_a, l1_b, l1_y, arena bytes)."""
    elem = 4 if dtype == F32 else 1
    sizes = {"a": tile_m * k * elem, "b": k * tile_n * elem, "y": tile_m * tile_n * out_elem}
    slots = [(name, i) for name in "aby" for i in range(1 if name in single else 2)]
    offsets: dict[str, list[int]] = {"a": [0, 0], "b": [0, 0], "y": [0, 0]}
    pos = 0
    for idx in rng.permutation(len(slots)):
        name, i = slots[idx]
        offsets[name][i] = pos
        pos += _align(sizes[name])
    for name in single:
        offsets[name][1] = offsets[name][0]
    return offsets["a"], offsets["b"], offsets["y"], pos


GUARD = 64  # canary bytes around the L1 arena and after Y


def run_tiled(lib, rng, *, dtype, m, n, k, b_transposed, tile_m, tile_n, batch, a_buf, b_buf,
              a_offsets=None, b_offsets=None, cores=1, a_zp=0, b_zp=0, bias=None, rq=None,
              layout=None, single=""):
    """dpl_gemm_tiled on flat L2 buffers a_buf, b_buf; returns (Y [batch, m, n], (to_l1, to_l2))."""
    rq_mode = None if rq is None else rq.mode
    out_elem = out_elem_bytes(dtype, rq_mode)
    if layout is None:
        layout = l1_layout(rng, dtype, k, tile_m, tile_n, out_elem, single)
    l1_a, l1_b, l1_y, arena = layout
    a_off = None if a_offsets is None else np.ascontiguousarray(a_offsets, dtype=np.int32)
    b_off = None if b_offsets is None else np.ascontiguousarray(b_offsets, dtype=np.int32)
    plan = CPlan(dtype, m, n, k, int(b_transposed), tile_m, tile_n, batch, _i32p(a_off), _i32p(b_off),
                 (U32 * 2)(*l1_a), (U32 * 2)(*l1_b), (U32 * 2)(*l1_y), cores, a_zp, b_zp)
    l1_mem = rng.integers(0, 256, size=arena + 2 * GUARD, dtype=np.uint8)  # garbage, canaries
    canary = l1_mem.copy()
    y_dtype = np.float32 if dtype == F32 else (np.int32 if out_elem == 4 else np.int8)
    y_mem = np.full(batch * m * n * out_elem + GUARD, 0xA5, dtype=np.uint8)
    crq = None
    if rq is not None:
        vec = {name: None if getattr(rq, name) is None else np.ascontiguousarray(getattr(rq, name), np.int32)
               for name in ("bias", "mul", "add", "shift")}
        crq = CRequant(MODE[rq.mode], _i32p(vec["bias"]), _i32p(vec["mul"]), _i32p(vec["add"]),
                       _i32p(vec["shift"]), rq.out_zp, rq.lo, rq.hi)
    bias_arr = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    lib.dpl_dma_reset_counters()
    lib.dpl_gemm_tiled(ctypes.byref(plan), l1_mem.ctypes.data + GUARD, a_buf.ctypes.data, b_buf.ctypes.data,
                       y_mem.ctypes.data, None if bias_arr is None else bias_arr.ctypes.data,
                       None if crq is None else ctypes.byref(crq))
    counters = dma_counters(lib)
    assert (l1_mem[:GUARD] == canary[:GUARD]).all() and (l1_mem[-GUARD:] == canary[-GUARD:]).all(), \
        "wrote outside the L1 arena"
    assert (y_mem[batch * m * n * out_elem:] == 0xA5).all(), "wrote past the end of Y"
    y = y_mem[:batch * m * n * out_elem].view(y_dtype).reshape(batch, m, n).copy()
    return y, counters


def untiled(dtype, m, n, k, b_transposed, batch, a_buf, b_buf, a_offsets, b_offsets,
            a_zp=0, b_zp=0, bias=None, rq=None):
    """The reference: every batch as one untiled GEMM (reference.gemm_s8 / float64 NumPy)."""
    outs = []
    for bi in range(batch):
        ao = a_offsets[bi] if a_offsets is not None else bi * m * k
        bo = b_offsets[bi] if b_offsets is not None else bi * k * n
        a = a_buf[ao:ao + m * k].reshape(m, k)
        b = b_buf[bo:bo + k * n].reshape((n, k) if b_transposed else (k, n))
        if dtype == S8:
            outs.append(ref.gemm_s8(a, b, a_zp, b_zp, rq, b_transposed))
        else:
            y = a.astype(np.float64) @ (b.T if b_transposed else b).astype(np.float64)
            outs.append(y + bias if bias is not None else y)
    return np.stack(outs)


def assert_close_f32(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def random_offsets(rng, kind, batch, size):
    """Element offsets of `batch` operands of `size` elements: None (contiguous), "broadcast" (one
    operand for every batch) or "random" (anywhere in a pool, possibly repeated or overlapping).
    Returns (offsets or None, buffer length)."""
    if kind == "null":
        return None, batch * size
    if kind == "broadcast":
        off = int(rng.integers(0, size + 1))
        return [off] * batch, off + size
    offs = rng.integers(0, batch * size + 1, size=batch)
    if batch > 1 and rng.random() < 0.3:
        offs[rng.integers(batch)] = offs[0]  # a repeated operand among others
    return offs.tolist(), int(offs.max()) + size


def random_requant(rng, mode, n, mag):
    """A requantization with per-column vectors that differ per column (wrong indexing shows)."""
    bias = rng.integers(-(2**12), 2**12, size=n).astype(np.int32) if rng.random() < 0.7 else None
    if mode == "none":
        return ref.Requant("none", bias)
    lo, hi = (-128, 127) if rng.random() < 0.6 else sorted(rng.integers(-128, 128, size=2).tolist())
    out_zp = int(rng.integers(-20, 21))
    if mode == "fixed":
        mul, shift = ref.quantize_multiplier(rng.uniform(30.0, 150.0, size=n) / (mag + 2**12))
        return ref.Requant("fixed", bias, mul, None, shift, out_zp, lo, hi)
    mul = rng.integers(1, 2**10, size=n).astype(np.int32)
    add = rng.integers(-(2**12), 2**12, size=n).astype(np.int32)
    shift = np.clip(np.ceil(np.log2((mag + 2**12) * mul / 100.0)), 0, 31).astype(np.int32)
    keep = rng.random(3) < 0.8
    return ref.Requant("int_ops", bias, mul if keep[0] else None, add if keep[1] else None,
                       shift if keep[2] else None, out_zp, lo, hi)


# ---------------------------------------------------------------------------------------------
# the prediction formula itself, on hand-counted cases


def test_predicted_dma_bytes_by_hand():
    # 10 x 6 x 5 f32, tiles 3 x 6: one column block, 4 row blocks; B broadcast over 2 batches
    assert predicted_dma_bytes(F32, 10, 6, 5, 3, 6, 2, None, [0, 0]) == (
        2 * 10 * 5 * 4 + 5 * 6 * 4, 2 * 60 * 4)
    # one row block: A once per batch; 3 column blocks (cols 4, 4, 1) re-fetched per batch
    assert predicted_dma_bytes(S8, 2, 9, 7, 2, 4, 2, out_elem=1) == (2 * 2 * 7 + 2 * 9 * 7, 2 * 18)
    # 2 x 2 tile grid: A per row block (2x), B per tile (4x)
    assert predicted_dma_bytes(S8, 4, 4, 3, 2, 2, 1) == (4 * 3 + 2 * 2 * 2 * 3, 4 * 4 * 4)
    # A offsets X, Y, X with one row block: the third batch re-fetches X (only the previous key counts)
    assert predicted_dma_bytes(S8, 2, 2, 3, 2, 2, 3, [0, 6, 0], [0, 0, 0]) == (3 * 6 + 6, 3 * 4 * 4)


@pytest.mark.parametrize("dtype", [F32, S8])
def test_counters_match_hand_count(lib, dtype):
    rng = np.random.default_rng(5)
    m, n, k, batch = 10, 6, 5, 2
    a = (rng.integers(-5, 5, size=batch * m * k)).astype(np.float32 if dtype == F32 else np.int8)
    b = (rng.integers(-5, 5, size=k * n)).astype(np.float32 if dtype == F32 else np.int8)
    y, counters = run_tiled(lib, rng, dtype=dtype, m=m, n=n, k=k, b_transposed=False, tile_m=3, tile_n=6,
                            batch=batch, a_buf=a, b_buf=b, b_offsets=[0, 0], cores=3)
    elem = 4 if dtype == F32 else 1
    assert counters == (batch * m * k * elem + k * n * elem, batch * m * n * 4)
    want = untiled(dtype, m, n, k, False, batch, a, b, None, [0, 0])
    np.testing.assert_array_equal(y, want.astype(y.dtype))  # small integers: exact in f32 too


# ---------------------------------------------------------------------------------------------
# dpl_gemm_tiled == untiled GEMM, and the DMA traffic == prediction

ZP = st.one_of(st.just(0), st.integers(-128, 127))
DIM = st.one_of(st.integers(1, 70), st.sampled_from([1, 2, 3, 5, 7, 11, 13, 17, 31, 37, 61, 67]))


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), m=DIM, n=DIM, k=DIM, batch=st.integers(1, 3),
       a_kind=st.sampled_from(["null", "random", "broadcast"]),
       b_kind=st.sampled_from(["null", "random", "broadcast"]),
       cores=st.sampled_from([1, 2, 3, 8]), dtype=st.sampled_from([F32, S8]), b_transposed=st.booleans(),
       mode=st.sampled_from(["null", "none", "fixed", "int_ops"]),
       zps=st.tuples(ZP, ZP), single=st.sampled_from(["", "a", "b", "ab"]),
       seed=st.integers(0, 2**32 - 1))
def test_tiled_matches_untiled(lib, data, m, n, k, batch, a_kind, b_kind, cores, dtype, b_transposed,
                               mode, zps, single, seed):
    tile_m = data.draw(st.integers(1, m), label="tile_m")
    tile_n = data.draw(st.integers(1, n), label="tile_n")
    rng = np.random.default_rng(seed)
    a_offsets, a_len = random_offsets(rng, a_kind, batch, m * k)
    b_offsets, b_len = random_offsets(rng, b_kind, batch, k * n)
    common = dict(dtype=dtype, m=m, n=n, k=k, b_transposed=b_transposed, batch=batch,
                  a_offsets=a_offsets, b_offsets=b_offsets)
    if dtype == F32:
        a_buf = rng.standard_normal(a_len).astype(np.float32)
        b_buf = rng.standard_normal(b_len).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32) if mode != "null" else None
        want = untiled(**common, a_buf=a_buf, b_buf=b_buf, bias=bias)
        got, counters = run_tiled(lib, rng, **common, tile_m=tile_m, tile_n=tile_n, a_buf=a_buf, b_buf=b_buf,
                                  cores=cores, bias=bias, single=single)
        assert_close_f32(got, want)
        rq_mode = None
    else:
        a_zp, b_zp = zps
        a_buf = rng.integers(-128, 128, size=a_len, dtype=np.int8)
        b_buf = rng.integers(-128, 128, size=b_len, dtype=np.int8)
        acc = untiled(**common, a_buf=a_buf, b_buf=b_buf, a_zp=a_zp, b_zp=b_zp)
        rq = None if mode == "null" else random_requant(rng, mode, n, float(np.abs(acc).max()))
        want = untiled(**common, a_buf=a_buf, b_buf=b_buf, a_zp=a_zp, b_zp=b_zp, rq=rq)
        got, counters = run_tiled(lib, rng, **common, tile_m=tile_m, tile_n=tile_n, a_buf=a_buf, b_buf=b_buf,
                                  cores=cores, a_zp=a_zp, b_zp=b_zp, rq=rq, single=single)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        rq_mode = None if rq is None else rq.mode
    assert counters == predicted_dma_bytes(dtype, m, n, k, tile_m, tile_n, batch, a_offsets, b_offsets,
                                           out_elem_bytes(dtype, rq_mode))


@pytest.mark.parametrize("b_transposed", [False, True])
@pytest.mark.parametrize("kind", ["f32", "none", "fixed", "int_ops"])
@pytest.mark.parametrize("m,n,tile_m,tile_n,cores", [
    (5, 29, 5, 12, 8),   # 5 rows < 8 cores <= 12 columns: column split; edge tile (5 columns): row split
    (9, 20, 9, 20, 8),   # 9 rows: 2 per core, cores 5..7 idle
    (3, 3, 2, 2, 8),     # fewer rows and columns than cores: row split
    (7, 16, 3, 16, 3),   # 3 rows: one per core; edge tile of 1 row and 16 columns: column split
])
def test_core_splits(lib, m, n, tile_m, tile_n, cores, kind, b_transposed):
    """Every way a tile is shared among cores (rows, columns, idle cores), with per-column bias and
    requantization vectors that must be indexed by global column."""
    rng = np.random.default_rng(m * 100 + n)
    k, batch = 13, 2
    dtype = F32 if kind == "f32" else S8
    b_offsets = [7, 7]  # broadcast B, not at offset 0
    common = dict(dtype=dtype, m=m, n=n, k=k, b_transposed=b_transposed, batch=batch,
                  a_offsets=None, b_offsets=b_offsets)
    if dtype == F32:
        a_buf = rng.standard_normal(batch * m * k).astype(np.float32)
        b_buf = rng.standard_normal(7 + k * n).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        want = untiled(**common, a_buf=a_buf, b_buf=b_buf, bias=bias)
        got, _ = run_tiled(lib, rng, **common, tile_m=tile_m, tile_n=tile_n, a_buf=a_buf, b_buf=b_buf,
                           cores=cores, bias=bias)
        assert_close_f32(got, want)
        return
    a_buf = rng.integers(-128, 128, size=batch * m * k, dtype=np.int8)
    b_buf = rng.integers(-128, 128, size=7 + k * n, dtype=np.int8)
    acc = untiled(**common, a_buf=a_buf, b_buf=b_buf, a_zp=-9, b_zp=4)
    rq = random_requant(rng, kind, n, float(np.abs(acc).max()))
    want = untiled(**common, a_buf=a_buf, b_buf=b_buf, a_zp=-9, b_zp=4, rq=rq)
    got, _ = run_tiled(lib, rng, **common, tile_m=tile_m, tile_n=tile_n, a_buf=a_buf, b_buf=b_buf,
                       cores=cores, a_zp=-9, b_zp=4, rq=rq)
    np.testing.assert_array_equal(got, want)


def test_large_int8_gemm_is_bit_exact(lib):
    """256 x 256 x 256 int8, tiles 64 x 32, FIXED requantization, 8 cores."""
    rng = np.random.default_rng(256)
    m = n = k = 256
    a_buf = rng.integers(-128, 128, size=m * k, dtype=np.int8)
    b_buf = rng.integers(-128, 128, size=k * n, dtype=np.int8)
    acc = untiled(S8, m, n, k, False, 1, a_buf, b_buf, None, None, 5, -3)
    mul, shift = ref.quantize_multiplier(rng.uniform(50.0, 120.0, size=n) / float(np.abs(acc).max()))
    rq = ref.Requant("fixed", rng.integers(-1000, 1000, size=n).astype(np.int32), mul, None, shift, -7)
    want = untiled(S8, m, n, k, False, 1, a_buf, b_buf, None, None, 5, -3, rq=rq)
    assert len(np.unique(want)) > 100  # not saturated
    got, counters = run_tiled(lib, rng, dtype=S8, m=m, n=n, k=k, b_transposed=False, tile_m=64, tile_n=32,
                              batch=1, a_buf=a_buf, b_buf=b_buf, cores=8, a_zp=5, b_zp=-3, rq=rq)
    np.testing.assert_array_equal(got, want)
    # A: 4 row blocks of 64 x 256; B: a 256 x 32 block for each of the 32 tiles; Y: 256 x 256 int8
    assert counters == (4 * 64 * 256 + 32 * 256 * 32, 256 * 256) == predicted_dma_bytes(
        S8, m, n, k, 64, 32, 1, out_elem=1)


# ---------------------------------------------------------------------------------------------
# a broken plan must give wrong results on the deferred-copy DMA


def test_overlapping_y_slots_are_caught(lib):
    """l1_y[0] == l1_y[1]: tile t+1 overwrites tile t's result before its out-transfer was waited.
    On hardware that is a race; the host DMA copies at wait, so it reliably yields wrong output."""
    rng = np.random.default_rng(8)
    m, n, k, tile_m, tile_n = 16, 16, 8, 4, 4
    a_buf = rng.integers(-128, 128, size=m * k, dtype=np.int8)
    b_buf = rng.integers(-128, 128, size=k * n, dtype=np.int8)
    want = untiled(S8, m, n, k, False, 1, a_buf, b_buf, None, None)
    kw = dict(dtype=S8, m=m, n=n, k=k, b_transposed=False, tile_m=tile_m, tile_n=tile_n, batch=1,
              a_buf=a_buf, b_buf=b_buf, cores=3)
    l1_a, l1_b, l1_y, arena = l1_layout(rng, S8, k, tile_m, tile_n, 4)
    good, _ = run_tiled(lib, rng, **kw, layout=(l1_a, l1_b, l1_y, arena))
    np.testing.assert_array_equal(good, want)  # the same plan with separate slots is right
    broken, _ = run_tiled(lib, rng, **kw, layout=(l1_a, l1_b, [l1_y[0], l1_y[0]], arena))
    assert (broken != want).any()


@pytest.mark.parametrize("single", ["a", "b", "ab"])
def test_single_buffered_operands(lib, single):
    """Equal slot offsets single-buffer an operand: its next block comes in only after the current
    tile is computed, so the result stays right with half the L1 for that operand."""
    rng = np.random.default_rng(10)
    m, n, k, tile_m, tile_n = 12, 12, 8, 4, 6  # 3 row blocks x 2 column blocks
    a_buf = rng.integers(-128, 128, size=m * k, dtype=np.int8)
    b_buf = rng.integers(-128, 128, size=n * k, dtype=np.int8)
    want = untiled(S8, m, n, k, True, 1, a_buf, b_buf, None, None)
    kw = dict(dtype=S8, m=m, n=n, k=k, b_transposed=True, tile_m=tile_m, tile_n=tile_n, batch=1,
              a_buf=a_buf, b_buf=b_buf, cores=8)
    got, counters = run_tiled(lib, rng, **kw, single=single)
    np.testing.assert_array_equal(got, want)
    assert counters == predicted_dma_bytes(S8, m, n, k, tile_m, tile_n, 1, None, None, 4)


def test_y_slot_overlapping_b_slot_is_caught(lib):
    """A Y slot placed on the second B slot: the B block fetched for the next tile lands on a result
    that has not gone out yet."""
    rng = np.random.default_rng(9)
    m, n, k, tile_m, tile_n = 8, 12, 6, 8, 4  # one row block, three column blocks
    a_buf = rng.standard_normal(m * k).astype(np.float32)
    b_buf = rng.standard_normal(k * n).astype(np.float32)
    want = untiled(F32, m, n, k, False, 1, a_buf, b_buf, None, None)
    a_size, b_size, y_size = tile_m * k * 4, k * tile_n * 4, tile_m * tile_n * 4  # 192, 96, 128
    l1_a, l1_b = [0, a_size], [2 * a_size, 2 * a_size + b_size]
    l1_y = [l1_b[1] + y_size, l1_b[1] + 2 * y_size]  # B slot 1 has room for a Y tile
    arena = l1_y[1] + y_size
    kw = dict(dtype=F32, m=m, n=n, k=k, b_transposed=False, tile_m=tile_m, tile_n=tile_n, batch=1,
              a_buf=a_buf, b_buf=b_buf, cores=2)
    good, _ = run_tiled(lib, rng, **kw, layout=(l1_a, l1_b, l1_y, arena))
    assert_close_f32(good, want)
    broken, _ = run_tiled(lib, rng, **kw, layout=(l1_a, l1_b, [l1_b[1], l1_y[1]], arena))
    assert (np.abs(broken - want) > 1e-3).any()


# ---------------------------------------------------------------------------------------------
# the host HAL itself


@pytest.mark.parametrize("cores", range(1, 9))
def test_fork_and_barrier(lib, cores):
    out = (ctypes.c_int32 * 5)()
    lib.fb_run(cores, 50, out)
    errors, saw_count, threads, id_after, count_after = list(out)
    assert errors == 0
    assert saw_count == cores
    assert threads == cores  # every core on its own thread
    assert (id_after, count_after) == (0, 1)  # outside a fork: core 0 of 1


def test_dma_copies_at_wait_with_strides(lib):
    src = np.arange(64, dtype=np.uint8).reshape(8, 8)
    dst = np.zeros((4, 6), dtype=np.uint8)
    job = CDmaJob()
    lib.dpl_dma_reset_counters()
    # rows 1..3, columns 2..6 of src into dst[:, 1:6]
    lib.dpl_dma_start_2d(ctypes.byref(job), dst.ctypes.data + 6 + 1, src.ctypes.data + 8 + 2,
                         5, 3, 6, 8, TO_L1)
    assert job.pending == 1
    # nothing copied yet: the destination block is poisoned (undefined until the wait), the rest untouched
    poisoned = np.zeros_like(dst)
    poisoned[1:4, 1:6] = 0xC3
    np.testing.assert_array_equal(dst, poisoned)
    src[2, 3] = 200  # the source as it is at wait time is what arrives
    lib.dpl_dma_wait(ctypes.byref(job))
    assert job.pending == 0
    want = np.zeros_like(dst)
    want[1:4, 1:6] = src[1:4, 2:7]
    np.testing.assert_array_equal(dst, want)
    assert want[2, 2] == 200
    lib.dpl_dma_wait(ctypes.byref(job))  # nothing pending: no-op
    lib.dpl_dma_start_1d(ctypes.byref(job), src.ctypes.data, dst.ctypes.data, 10, TO_L2)
    lib.dpl_dma_wait(ctypes.byref(job))
    np.testing.assert_array_equal(src.reshape(-1)[:10], dst.reshape(-1)[:10])
    assert dma_counters(lib) == (15, 10)
    lib.dpl_dma_reset_counters()
    assert dma_counters(lib) == (0, 0)


@pytest.fixture(scope="module")
def abort_prog(build_dir):
    prog = build_dir / "abort_test.c"
    prog.write_text(ABORT_TEST_C)
    exe = build_dir / "abort_test"
    run_checked(["gcc", *C_FLAGS, "-I", KERNEL_DIR, prog, HAL_HOST, "-o", exe])
    return exe


@pytest.mark.parametrize("case,message", [
    ("nested", "nested"),
    ("pending", "pending"),
    ("big", "128 KiB"),
])
def test_hal_misuse_aborts(abort_prog, case, message):
    proc = subprocess.run([str(abort_prog), case], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGABRT, (proc.returncode, proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert "returned" not in proc.stdout
    if case == "big":
        assert "128 KiB ok" in proc.stdout  # exactly 128 KiB is allowed
