/* dpl_gemm_s8: int8 x int8 -> int32 GEMM with zero points and requantization, see
   dpl_kernels.h. Bit-exact against tvm_deeploy/offload/reference.py (gemm_s8, requantize_*).

   Speed on rv32imc (no multiply-accumulate: a MAC is a mul and an add at least): the products run
   in register blocks of 2 rows x 8 columns when B is not transposed (the 8 columns are contiguous
   in a row of B: one pointer, immediate offsets; per k step 10 loads, 16 mul, 16 add and a pointer
   step: 2.84 instructions per MAC in the loop) and of 2 x 4 when it is (every pointer walks k),
   unrolled over k with pointer increments only. For k <= GS8_PACK_K the two rows share their
   multiplies in 16-bit lanes (gs8_block_pair_2x8): 2.44 in the loop, 2.60 for a 64x256x64 GEMM with
   gcc 12 -O2.
   Larger blocks need more than the 27 registers rv32 leaves free, and spill. A single row (a decode
   step's GEMV, or the last of an odd number of rows) runs in 1 x 16, 1 x 8 and 1 x 4 blocks (1 x 4
   when B is transposed); edges use 2 x 1 and 1 x 1 blocks, so nothing is computed twice.

   Zero points are not subtracted in the inner loop. With A' = A - a_zp and B' = B - b_zp:
     sum_k A'B' = sum_k AB - b_zp * rowsum_A[m] - a_zp * colsum_B[n] + k * a_zp * b_zp.
   Row sums are a pass over each pair of rows (only when b_zp != 0), column sums a pass over each
   chunk of columns (only when a_zp != 0; for a constant B the generated code folds them into the
   bias instead). The correction is done modulo 2^32 in uint32_t: the true result fits int32
   (k_dim * 65025 < 2^31), so the wrapped sum is exact whatever the intermediate values are. */
#include "dpl_kernels.h"

/* columns whose bias and column correction are kept at a time (stack bytes: 4 per column) */
#define GS8_CHUNK 64
/* the widest register block: row i of a block's sums is s[GS8_WIDE * i ...] */
#define GS8_WIDE DPL_GEMM_S8_BLOCK
/* the longest reduction whose pairs of rows are packed into one word per k (stack bytes: 4 per k) */
#define GS8_PACK_K 256

/* The register blocks and the store stay functions of their own: inlined into the loops over the
   blocks, they leave the compiler too few registers for either (spills in every loop). */
#if defined(__GNUC__)
#define GS8_NOINLINE __attribute__((noinline))
#else
#define GS8_NOINLINE
#endif
/* The fast store stays inline in dpl_gemm_s8's loop, though dpl_gemm_s8_store calls it too: a call per 4-column
   block of a single row would cost a tenth of an instruction per MAC. */
#if defined(__GNUC__)
#define GS8_INLINE __inline__ __attribute__((always_inline))
#else
#define GS8_INLINE
#endif

/* Every int32 value produced by wrap-around arithmetic goes through here: uint32_t -> int32_t
   is implementation-defined above INT32_MAX; gcc (and every target we build for) wraps mod 2^32. */
static int32_t gs8_to_i32(uint32_t x) { return (int32_t)x; }

/* sum over k of p[k * step] */
static int32_t gs8_sum(const int8_t *p, int32_t step, int32_t k_dim) {
  int32_t s = 0;
  int32_t kk;
  for (kk = 0; kk < k_dim; ++kk, p += step) s += *p;
  return s;
}

/* The fixed-point scaling of DPL_REQUANT_FIXED: (acc * mul + 2^(sh-1)) >> sh in int64 for 1 <= sh <= 62,
   saturated to +-2^30 (beyond the int8 range either way). With q = floor(acc * mul / 2^(sh-1)) that is
   (q + 1) >> 1 = (q >> 1) + (q & 1); and for sh > 32, the usual case, q needs only the high word of the
   product: floor(floor(p / 2^32) / 2^(sh-33)). |acc * mul| < 2^62, so the high word fits int32.
   >> on a negative value is an arithmetic shift (implementation-defined; gcc guarantees it). */
static int32_t gs8_scale(int32_t acc, int32_t mul, int32_t sh) {
  const int64_t p = (int64_t)acc * (int64_t)mul;
  if (sh > 32) {
    const int32_t q = (int32_t)(p >> 32) >> (sh - 33);
    return (q >> 1) + (q & 1);
  } else {
    const int64_t q = p >> (sh - 1);
    const int64_t t = (q >> 1) + (q & 1);
    return t < -(1 << 30) ? -(1 << 30) : t > (1 << 30) ? (1 << 30) : (int32_t)t;
  }
}

/* Clamp to [lo, hi] and store as int8. */
static void gs8_put(int8_t *y, int32_t t, int32_t lo, int32_t hi) {
  *y = (int8_t)(t < lo ? lo : t > hi ? hi : t);
}

/* DPL_REQUANT_FIXED when every shift of the chunk is above 32 (a scale ratio below 1/4, as QDQ layers have) and
   lo <= hi: dpl_requant_fixed_high, about 15 instructions an output: at K = 64 a single-row GEMM's
   requantization costs a quarter of an instruction per MAC. */
static GS8_INLINE void gs8_store_fixed_high(const int32_t *s, int32_t rows, int32_t width, const uint32_t *row_corr,
                                            const uint32_t *col_add, const int32_t *mul, const int32_t *shift,
                                            int8_t *y, int32_t ldy, const dpl_requant_t *rq) {
  const int32_t out_zp = rq->out_zp, lo = rq->lo, hi = rq->hi;
  const uint32_t range = (uint32_t)hi - (uint32_t)lo;
  int32_t i, j;
/* output j of the row: 4 at a time, so that every operand is an immediate offset from its pointer */
#define GS8_FIXED_OUT(j)                                                                                      \
  y[j] = (int8_t)dpl_requant_fixed_high(gs8_to_i32((uint32_t)s[j] + r + col_add[j]), mul[j], shift[j] - 33, \
                                        out_zp, lo, hi, range);
  if (rows == 2) {
    /* both rows of a column at once: its bias, multiplier and shift are loaded once */
    const uint32_t r0 = row_corr[0], r1 = row_corr[1];
    for (j = 0; j < width; ++j) {
      const uint32_t add = col_add[j];
      const int32_t m = mul[j], sh = shift[j] - 33;
      y[j] = (int8_t)dpl_requant_fixed_high(gs8_to_i32((uint32_t)s[j] + r0 + add), m, sh, out_zp, lo, hi, range);
      y[ldy + j] = (int8_t)dpl_requant_fixed_high(gs8_to_i32((uint32_t)s[GS8_WIDE + j] + r1 + add), m, sh, out_zp,
                                                  lo, hi, range);
    }
    return;
  }
  for (i = 0; i < rows; ++i, s += GS8_WIDE, y += ldy) {
    const uint32_t r = row_corr[i];
    for (j = 0; j + 4 <= width; j += 4) {
      GS8_FIXED_OUT(j) GS8_FIXED_OUT(j + 1) GS8_FIXED_OUT(j + 2) GS8_FIXED_OUT(j + 3)
    }
    for (; j < width; ++j) GS8_FIXED_OUT(j)
  }
#undef GS8_FIXED_OUT
}

/* Store a block of sums (s[GS8_WIDE * i + j]: row i, column n + j of this call) at y + i * ldy + j, with the
   zero-point corrections of its rows and col_add[j] (rq's bias minus the column correction), then rq's
   requantization (where gs8_store_fixed_high does not apply). rq's fields are read into locals first:
   stores through y could alias them as far as the compiler knows. */
static GS8_NOINLINE void gs8_store_block(const int32_t *s, int32_t rows, int32_t width,
                                         const uint32_t *row_corr, const uint32_t *col_add, int32_t n,
                                         void *y, int32_t ldy, const dpl_requant_t *rq) {
  const int32_t mode = rq ? rq->mode : DPL_REQUANT_NONE;
  int32_t i, j;
  for (i = 0; i < rows; ++i, s += GS8_WIDE) {
    const uint32_t r = row_corr[i];
    if (mode == DPL_REQUANT_NONE) {
      int32_t *const out = (int32_t *)y + i * ldy;
      for (j = 0; j < width; ++j) out[j] = gs8_to_i32((uint32_t)s[j] + r + col_add[j]);
    } else if (mode == DPL_REQUANT_FIXED) {
      int8_t *const out = (int8_t *)y + i * ldy;
      const int32_t *const mul = rq->mul + n, *const shift = rq->shift + n;
      const int32_t out_zp = rq->out_zp, lo = rq->lo, hi = rq->hi;
      for (j = 0; j < width; ++j) {
        const int32_t acc = gs8_to_i32((uint32_t)s[j] + r + col_add[j]);
        gs8_put(out + j, gs8_scale(acc, mul[j], shift[j]) + out_zp, lo, hi);
      }
    } else if (mode == DPL_REQUANT_INT_OPS) {
      int8_t *const out = (int8_t *)y + i * ldy;
      for (j = 0; j < width; ++j) {
        int32_t t = gs8_to_i32((uint32_t)s[j] + r + col_add[j]);
        if (rq->mul) t = gs8_to_i32((uint32_t)t * (uint32_t)rq->mul[n + j]);
        if (rq->add) t = gs8_to_i32((uint32_t)t + (uint32_t)rq->add[n + j]);
        /* 0 <= shift <= 31; >> on a negative int32 is arithmetic (implementation-defined; gcc guarantees it) */
        if (rq->shift) t = t >> rq->shift[n + j];
        gs8_put(out + j, gs8_to_i32((uint32_t)t + (uint32_t)rq->out_zp), rq->lo, rq->hi);
      }
    }
    /* an unknown mode stores nothing */
  }
}

/* ---- register blocks: s[GS8_WIDE * row + column] = sum over k of A(row, k) * B(k, column) ---------------- */

/* Keeps gcc's scheduler from hoisting every load of an unrolled k step to its top, which runs rv32 out
   of registers (spills cost more than the loads they would hide); a no-op for the generated code. */
#if defined(__GNUC__)
#define GS8_IN_ORDER() __asm__ __volatile__("")
#else
#define GS8_IN_ORDER()
#endif

/* The k loop of a block: groups of U steps (GROUP), then the last k_dim % U steps one at a time
   (STEP(0)); ADVANCE(n) moves the k-contiguous pointers on by n. `a0` is the first row's pointer. */
#define GS8_K_LOOP(U, GROUP, STEP, ADVANCE)                  \
  {                                                          \
    const int8_t *const group_end = a0 + (k_dim & ~(U - 1)); \
    const int8_t *const end = a0 + k_dim;                    \
    while (a0 != group_end) {                                \
      GROUP ADVANCE(U)                                       \
    }                                                        \
    while (a0 != end) {                                      \
      STEP(0) ADVANCE(1)                                     \
    }                                                        \
  }

/* 2 rows x 8 columns, B not transposed: the columns are b[0..7], consecutive rows of B ldb apart. */
static GS8_NOINLINE void gs8_block_2x8(const int8_t *a0, int32_t lda, const int8_t *b, int32_t ldb,
                                       int32_t k_dim, int32_t *s) {
  const int8_t *a1 = a0 + lda;
  int32_t s00 = 0, s01 = 0, s02 = 0, s03 = 0, s04 = 0, s05 = 0, s06 = 0, s07 = 0;
  int32_t s10 = 0, s11 = 0, s12 = 0, s13 = 0, s14 = 0, s15 = 0, s16 = 0, s17 = 0;
#define GS8_COLUMN(j)                   \
  {                                     \
    const int32_t w = b[j];             \
    s0##j += x0 * w, s1##j += x1 * w;   \
    GS8_IN_ORDER();                     \
  }
#define GS8_STEP(u)                                                                                    \
  {                                                                                                    \
    const int32_t x0 = a0[u], x1 = a1[u];                                                              \
    GS8_COLUMN(0) GS8_COLUMN(1) GS8_COLUMN(2) GS8_COLUMN(3) GS8_COLUMN(4) GS8_COLUMN(5) GS8_COLUMN(6) \
    GS8_COLUMN(7) b += ldb;                                                                            \
  }
#define GS8_ADVANCE(n) a0 += n, a1 += n;
  GS8_K_LOOP(2, GS8_STEP(0) GS8_STEP(1), GS8_STEP, GS8_ADVANCE)
#undef GS8_ADVANCE
#undef GS8_STEP
#undef GS8_COLUMN
  s[0] = s00, s[1] = s01, s[2] = s02, s[3] = s03, s[4] = s04, s[5] = s05, s[6] = s06, s[7] = s07;
  s += GS8_WIDE;
  s[0] = s10, s[1] = s11, s[2] = s12, s[3] = s13, s[4] = s14, s[5] = s15, s[6] = s16, s[7] = s17;
}

/* 1 row x 8 columns, B not transposed (a GEMV, or the last of an odd number of rows). */
static GS8_NOINLINE void gs8_block_1x8(const int8_t *a0, const int8_t *b, int32_t ldb, int32_t k_dim,
                                       int32_t *s) {
  int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
#define GS8_STEP(u)                                                                             \
  {                                                                                             \
    const int32_t x = a0[u];                                                                    \
    s0 += x * b[0], s1 += x * b[1], s2 += x * b[2], s3 += x * b[3], s4 += x * b[4];             \
    s5 += x * b[5], s6 += x * b[6], s7 += x * b[7];                                             \
    b += ldb;                                                                                   \
    GS8_IN_ORDER();                                                                             \
  }
#define GS8_ADVANCE(n) a0 += n;
  GS8_K_LOOP(2, GS8_STEP(0) GS8_STEP(1), GS8_STEP, GS8_ADVANCE)
#undef GS8_ADVANCE
#undef GS8_STEP
  s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3, s[4] = s4, s[5] = s5, s[6] = s6, s[7] = s7;
}

/* 2 rows x 8 columns, B not transposed, the two rows packed in one word per k: x[k] = a0[k] + 2^16 a1[k]
   (gs8_pack_pair). One mul then gives both rows' products, x[k] * w = a0 w + 2^16 a1 w, and one add
   accumulates them, so a column costs 9 instructions per 2 k steps (2 loads, 2 mul, 5 adds and shifts)
   for 4 MACs. The lanes are 16 bits: a product is in [-16256, 16384], so a sum of two k steps fits a lane,
   [-32512, 32768], and is taken out before the next. With t = sum + GS8_LANE_OFFSET (mod 2^32) the low
   lane holds S0 + 32767 in [255, 65535] and the high one S1 + 32512 in [0, 65280], both without borrow:
   t >> 16 is S1 + 32512 exactly (summed in h), and l, the sum of the t, is sum(S0 + 32767) + 2^16 h
   mod 2^32, from which the first row's sum follows exactly (it fits int32). */
#define GS8_LANE_LOW 32767u
#define GS8_LANE_HIGH 32512u
#define GS8_LANE_OFFSET (GS8_LANE_LOW + (GS8_LANE_HIGH << 16))
static GS8_NOINLINE void gs8_block_pair_2x8(const int32_t *x, const int8_t *b, int32_t ldb, int32_t k_dim,
                                            int32_t *s) {
  const int8_t *b1 = b + ldb;
  const int32_t *const end = x + (k_dim & ~1);
  const uint32_t offset = GS8_LANE_OFFSET, chunks = (uint32_t)(k_dim + 1) / 2u;
  uint32_t h0 = 0, h1 = 0, h2 = 0, h3 = 0, h4 = 0, h5 = 0, h6 = 0, h7 = 0;
  uint32_t l0 = 0, l1 = 0, l2 = 0, l3 = 0, l4 = 0, l5 = 0, l6 = 0, l7 = 0;
#define GS8_TAKE_OUT(j, sum)                \
  {                                         \
    const uint32_t t = (sum) + offset;      \
    l##j += t, h##j += t >> 16;             \
    GS8_IN_ORDER();                         \
  }
#define GS8_COLUMN(j) GS8_TAKE_OUT(j, x0 * (uint32_t)b[j] + x1 * (uint32_t)b1[j])
  while (x != end) {
    const uint32_t x0 = (uint32_t)x[0], x1 = (uint32_t)x[1];
    GS8_COLUMN(0) GS8_COLUMN(1) GS8_COLUMN(2) GS8_COLUMN(3) GS8_COLUMN(4) GS8_COLUMN(5) GS8_COLUMN(6)
    GS8_COLUMN(7)
    x += 2, b += 2 * ldb, b1 += 2 * ldb;
  }
#undef GS8_COLUMN
  if (k_dim & 1) {
    const uint32_t x0 = (uint32_t)x[0];
#define GS8_COLUMN(j) GS8_TAKE_OUT(j, x0 * (uint32_t)b[j])
    GS8_COLUMN(0) GS8_COLUMN(1) GS8_COLUMN(2) GS8_COLUMN(3) GS8_COLUMN(4) GS8_COLUMN(5) GS8_COLUMN(6)
    GS8_COLUMN(7)
#undef GS8_COLUMN
  }
#undef GS8_TAKE_OUT
#define GS8_ROWS(j)                                                                     \
  s[j] = gs8_to_i32(l##j - (h##j << 16) - chunks * GS8_LANE_LOW);                       \
  s[GS8_WIDE + j] = gs8_to_i32(h##j - chunks * GS8_LANE_HIGH);
  GS8_ROWS(0) GS8_ROWS(1) GS8_ROWS(2) GS8_ROWS(3) GS8_ROWS(4) GS8_ROWS(5) GS8_ROWS(6) GS8_ROWS(7)
#undef GS8_ROWS
}

/* x[k] = a0[k] + 2^16 a1[k] (mod 2^32) for gs8_block_pair_2x8, a1 = a0 + lda. */
static void gs8_pack_pair(const int8_t *a0, int32_t lda, int32_t k_dim, int32_t *x) {
  const int8_t *a1 = a0 + lda;
  int32_t kk;
  for (kk = 0; kk < k_dim; ++kk) x[kk] = gs8_to_i32((uint32_t)a0[kk] + ((uint32_t)a1[kk] << 16));
}

/* 1 row x 16 columns, B not transposed: a GEMV's block. A single row uses every weight once, so a MAC
   costs at least its load, mul and add; 16 columns share each activation load and pointer step: about
   3.25 instructions per MAC in the loop (1 x 8: 3.38). The barrier after each column keeps the weights'
   loads from being hoisted into 16 more registers. */
static GS8_NOINLINE void gs8_block_1x16(const int8_t *a0, const int8_t *b, int32_t ldb, int32_t k_dim,
                                        int32_t *s) {
  int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  int32_t s8 = 0, s9 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0, s14 = 0, s15 = 0;
#define GS8_COLUMN(j)    \
  {                      \
    s##j += x * b[j];    \
    GS8_IN_ORDER();      \
  }
#define GS8_STEP(u)                                                                                    \
  {                                                                                                    \
    const int32_t x = a0[u];                                                                           \
    GS8_COLUMN(0) GS8_COLUMN(1) GS8_COLUMN(2) GS8_COLUMN(3) GS8_COLUMN(4) GS8_COLUMN(5) GS8_COLUMN(6) \
    GS8_COLUMN(7) GS8_COLUMN(8) GS8_COLUMN(9) GS8_COLUMN(10) GS8_COLUMN(11) GS8_COLUMN(12)             \
    GS8_COLUMN(13) GS8_COLUMN(14) GS8_COLUMN(15) b += ldb;                                             \
  }
#define GS8_ADVANCE(n) a0 += n;
  GS8_K_LOOP(2, GS8_STEP(0) GS8_STEP(1), GS8_STEP, GS8_ADVANCE)
#undef GS8_ADVANCE
#undef GS8_STEP
#undef GS8_COLUMN
  s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3, s[4] = s4, s[5] = s5, s[6] = s6, s[7] = s7;
  s[8] = s8, s[9] = s9, s[10] = s10, s[11] = s11, s[12] = s12, s[13] = s13, s[14] = s14, s[15] = s15;
}

/* 1 row x 4 columns, B not transposed: a core's share of a narrow GEMV split over the cluster. */
static GS8_NOINLINE void gs8_block_1x4(const int8_t *a0, const int8_t *b, int32_t ldb, int32_t k_dim,
                                       int32_t *s) {
  int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#define GS8_STEP(u)                                                         \
  {                                                                         \
    const int32_t x = a0[u];                                                \
    s0 += x * b[0], s1 += x * b[1], s2 += x * b[2], s3 += x * b[3];         \
    b += ldb;                                                               \
    GS8_IN_ORDER();                                                         \
  }
#define GS8_ADVANCE(n) a0 += n;
  GS8_K_LOOP(4, GS8_STEP(0) GS8_STEP(1) GS8_STEP(2) GS8_STEP(3), GS8_STEP, GS8_ADVANCE)
#undef GS8_ADVANCE
#undef GS8_STEP
  s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3;
}

/* 2 rows x 4 columns, B transposed: column j is the k-contiguous row b + j * ldb. */
static GS8_NOINLINE void gs8_block_2x4t(const int8_t *a0, int32_t lda, const int8_t *b, int32_t ldb,
                                        int32_t k_dim, int32_t *s) {
  const int8_t *a1 = a0 + lda, *b0 = b, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
  int32_t s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
#define GS8_COLUMN(j, u)                \
  {                                     \
    const int32_t w = b##j[u];          \
    s0##j += x0 * w, s1##j += x1 * w;   \
    GS8_IN_ORDER();                     \
  }
#define GS8_STEP(u)                                                             \
  {                                                                             \
    const int32_t x0 = a0[u], x1 = a1[u];                                       \
    GS8_COLUMN(0, u) GS8_COLUMN(1, u) GS8_COLUMN(2, u) GS8_COLUMN(3, u)         \
  }
#define GS8_ADVANCE(n) a0 += n, a1 += n, b0 += n, b1 += n, b2 += n, b3 += n;
  GS8_K_LOOP(8, GS8_STEP(0) GS8_STEP(1) GS8_STEP(2) GS8_STEP(3) GS8_STEP(4) GS8_STEP(5) GS8_STEP(6)
                    GS8_STEP(7),
             GS8_STEP, GS8_ADVANCE)
#undef GS8_ADVANCE
#undef GS8_STEP
#undef GS8_COLUMN
  s[0] = s00, s[1] = s01, s[2] = s02, s[3] = s03;
  s[GS8_WIDE] = s10, s[GS8_WIDE + 1] = s11, s[GS8_WIDE + 2] = s12, s[GS8_WIDE + 3] = s13;
}

/* 1 row x 4 columns, B transposed (a GEMV against a [n, k] weight). */
static GS8_NOINLINE void gs8_block_1x4t(const int8_t *a0, const int8_t *b, int32_t ldb, int32_t k_dim,
                                        int32_t *s) {
  const int8_t *b0 = b, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
  int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#define GS8_STEP(u)                                                           \
  {                                                                           \
    const int32_t x = a0[u];                                                  \
    s0 += x * b0[u], s1 += x * b1[u], s2 += x * b2[u], s3 += x * b3[u];       \
    GS8_IN_ORDER();                                                           \
  }
#define GS8_ADVANCE(n) a0 += n, b0 += n, b1 += n, b2 += n, b3 += n;
  GS8_K_LOOP(8, GS8_STEP(0) GS8_STEP(1) GS8_STEP(2) GS8_STEP(3) GS8_STEP(4) GS8_STEP(5) GS8_STEP(6)
                    GS8_STEP(7),
             GS8_STEP, GS8_ADVANCE)
#undef GS8_ADVANCE
#undef GS8_STEP
  s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3;
}

#undef GS8_K_LOOP
#undef GS8_IN_ORDER

/* 2 rows x 1 column (the last columns), the column stepping by bstep over k (either layout). */
static GS8_NOINLINE void gs8_block_2x1(const int8_t *a0, int32_t lda, const int8_t *b, int32_t bstep,
                                       int32_t k_dim, int32_t *s) {
  const int8_t *a1 = a0 + lda;
  int32_t s0 = 0, s1 = 0;
  int32_t kk;
  for (kk = 0; kk < k_dim; ++kk, b += bstep) {
    const int32_t w = *b;
    s0 += a0[kk] * w, s1 += a1[kk] * w;
  }
  s[0] = s0, s[GS8_WIDE] = s1;
}

/* 1 row x 1 column, the column stepping by bstep over k. */
static GS8_NOINLINE void gs8_block_1x1(const int8_t *a0, const int8_t *b, int32_t bstep, int32_t k_dim,
                                       int32_t *s) {
  int32_t s0 = 0;
  int32_t kk;
  for (kk = 0; kk < k_dim; ++kk, b += bstep) s0 += a0[kk] * *b;
  s[0] = s0;
}

/* The sums of `rows` (1 or 2) rows by the columns from b on (at most `avail`) in the widest block that
   fits; `packed`: the two rows as gs8_pack_pair packs them, or NULL. Returns the number of columns done. */
static int32_t gs8_block(const int8_t *a, int32_t lda, int32_t rows, const int32_t *packed, const int8_t *b,
                         int32_t ldb, int32_t b_transposed, int32_t avail, int32_t k_dim, int32_t *s) {
  const int32_t bstep = b_transposed ? 1 : ldb;
  if (packed && avail >= 8) {
    gs8_block_pair_2x8(packed, b, ldb, k_dim, s);
    return 8;
  }
  if (!b_transposed && rows == 1 && avail >= 16) {
    gs8_block_1x16(a, b, ldb, k_dim, s);
    return 16;
  }
  if (!b_transposed && avail >= 8) {
    if (rows == 2) {
      gs8_block_2x8(a, lda, b, ldb, k_dim, s);
    } else {
      gs8_block_1x8(a, b, ldb, k_dim, s);
    }
    return 8;
  }
  if (!b_transposed && rows == 1 && avail >= 4) {
    gs8_block_1x4(a, b, ldb, k_dim, s);
    return 4;
  }
  if (b_transposed && avail >= 4) {
    if (rows == 2) {
      gs8_block_2x4t(a, lda, b, ldb, k_dim, s);
    } else {
      gs8_block_1x4t(a, b, ldb, k_dim, s);
    }
    return 4;
  }
  if (rows == 2) {
    gs8_block_2x1(a, lda, b, bstep, k_dim, s);
  } else {
    gs8_block_1x1(a, b, bstep, k_dim, s);
  }
  return 1;
}

/* col_add[j] = bias[n0 + j] - a_zp * colsum_B(n0 + j) for the chunk's columns (int32 arithmetic, wraps);
   returns the bias itself when there is no column correction to subtract, so a single-row GEMM does not
   copy it. */
static const uint32_t *gs8_col_add(const int8_t *b, int32_t bstep, int32_t bcol, int32_t k_dim, int32_t a_zp,
                                   const int32_t *bias, int32_t n0, int32_t cols, uint32_t *buffer) {
  int32_t j;
  if (a_zp == 0 && bias) return (const uint32_t *)bias + n0;
  for (j = 0; j < cols; ++j) {
    const uint32_t corr = a_zp != 0 ? (uint32_t)a_zp * (uint32_t)gs8_sum(b + (n0 + j) * bcol, bstep, k_dim) : 0u;
    buffer[j] = (bias ? (uint32_t)bias[n0 + j] : 0u) - corr;
  }
  return buffer;
}

/* Whether gs8_store_fixed_high applies to the columns n0 .. n0 + cols - 1. */
static int32_t gs8_high_shifts(const dpl_requant_t *rq, int32_t n0, int32_t cols) {
  int32_t j;
  if (!rq || rq->mode != DPL_REQUANT_FIXED || rq->lo > rq->hi) return 0;
  for (j = 0; j < cols; ++j) {
    if (rq->shift[n0 + j] <= 32) return 0;
  }
  return 1;
}

/* dpl_gemm_s8_store, kept inline in dpl_gemm_s8's loop over the blocks */
static GS8_INLINE void gs8_store(const int32_t *s, int32_t rows, int32_t width, const uint32_t *row_corr,
                                 const uint32_t *col_add, int32_t n, void *y, int32_t ldy, const dpl_requant_t *rq,
                                 int32_t high_shifts) {
  if (high_shifts) {
    gs8_store_fixed_high(s, rows, width, row_corr, col_add, rq->mul + n, rq->shift + n, (int8_t *)y, ldy, rq);
  } else {
    gs8_store_block(s, rows, width, row_corr, col_add, n, y, ldy, rq);
  }
}

int32_t dpl_gemm_s8_row_sum(const int8_t *a, int32_t k_dim) { return gs8_sum(a, 1, k_dim); }

int32_t dpl_gemm_s8_high_shifts(const dpl_requant_t *rq, int32_t n0, int32_t cols) {
  return gs8_high_shifts(rq, n0, cols);
}

void dpl_gemm_s8_store(const int32_t *s, int32_t rows, int32_t width, const uint32_t *row_corr,
                       const uint32_t *col_add, int32_t n, void *y, int32_t ldy, const dpl_requant_t *rq,
                       int32_t high_shifts) {
  gs8_store(s, rows, width, row_corr, col_add, n, y, ldy, rq, high_shifts);
}

void dpl_gemm_s8(const int8_t *a, int32_t lda, const int8_t *b, int32_t ldb, int32_t b_transposed,
                 void *y, int32_t ldy, int32_t m_dim, int32_t n_dim, int32_t k_dim,
                 int32_t a_zp, int32_t b_zp, const dpl_requant_t *rq) {
  /* B(k, n) for a fixed n is a column walked with stride bstep; consecutive columns start bcol apart. */
  const int32_t bstep = b_transposed ? 1 : ldb;
  const int32_t bcol = b_transposed ? ldb : 1;
  const uint32_t kzz = (uint32_t)k_dim * (uint32_t)a_zp * (uint32_t)b_zp;
  const int32_t *const bias = rq ? rq->bias : 0;
  uint32_t col_buffer[GS8_CHUNK];
  int32_t packed[GS8_PACK_K];
  const int32_t pack = !b_transposed && k_dim <= GS8_PACK_K;
  const int32_t out_elem = rq && rq->mode != DPL_REQUANT_NONE ? 1 : 4; /* bytes of an output */
  int32_t n0, m0;

  for (n0 = 0; n0 < n_dim; n0 += GS8_CHUNK) {
    const int32_t cols = n_dim - n0 < GS8_CHUNK ? n_dim - n0 : GS8_CHUNK;
    const uint32_t *const col_add = gs8_col_add(b, bstep, bcol, k_dim, a_zp, bias, n0, cols, col_buffer);
    const int32_t high_shifts = gs8_high_shifts(rq, n0, cols);
    for (m0 = 0; m0 < m_dim; m0 += 2) {
      const int32_t rows = m_dim - m0 < 2 ? m_dim - m0 : 2;
      const int8_t *arow = a + m0 * lda;
      uint32_t row_corr[2]; /* k*a_zp*b_zp - b_zp*rowsum_A */
      int32_t i, n, width;
      for (i = 0; i < rows; ++i) {
        row_corr[i] = b_zp != 0 ? kzz - (uint32_t)b_zp * (uint32_t)gs8_sum(arow + i * lda, 1, k_dim) : kzz;
      }
      if (pack && rows == 2) gs8_pack_pair(arow, lda, k_dim, packed);
      for (n = n0; n < n0 + cols; n += width) {
        int32_t s[2 * GS8_WIDE];
        width = gs8_block(arow, lda, rows, pack && rows == 2 ? packed : 0, b + n * bcol, ldb, b_transposed,
                          n0 + cols - n, k_dim, s);
        gs8_store(s, rows, width, row_corr, col_add + (n - n0), n, (uint8_t *)y + out_elem * (m0 * ldy + n), ldy, rq,
                  high_shifts);
      }
    }
  }
}
