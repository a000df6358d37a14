/* dpl_gemm_s8_lanes: int8 x int8 GEMM against a constant B packed in lane words, see dpl_kernels.h.
   Bit-exact against tvm_deeploy/offload/reference.py (gemm_s8 and the requantizations), like dpl_gemm_s8.

   Without packed SIMD a MAC is at least a weight load, a mul and an add. Packing three columns' weights into
   two words lets one mul (mod 2^32) form the products of one activation with 1.5 weights:
     A = b0 + 2^21 b1,  B = b2 + 2^10 b1   (per k, mod 2^32; tvm_deeploy/plan/lanes.py packs them)
   so that over a chunk of k steps the wrapped sums hold
     sum x A = S0 + 2^21 S1,  sum x B = S2 + 2^10 S1   (mod 2^32).
   While every |S| of the chunk stays below 2^20 (the planner picks k_chunk from the weights: 128 * sum_k |b|
   < 2^20 per column), S0 is the low 21 bits of the first sum sign-extended, S1 mod 2^11 its top 11 bits
   after removing S0, and S2 and S1's high bits follow from the second sum the same way (GL_TAKE).
   A panel is 6 columns: 4 words per k, [panel][k][4]; the last panel's missing columns are zero weights.
   Per k step of one row: 1 activation load, 4 word loads, 4 mul, 4 add for 6 MACs (2.17 instructions per
   MAC before loop and requantization; 2.08 when two panels share the activation load; two rows sharing the
   word loads: 1.83). */
#include "dpl_kernels.h"

#if defined(__GNUC__)
#define GL_NOINLINE __attribute__((noinline))
#define GL_IN_ORDER() __asm__ __volatile__("")
#else
#define GL_NOINLINE
#define GL_IN_ORDER()
#endif

/* the low 21 bits of x as a signed number (>> on a negative int32 is arithmetic: gcc guarantees it) */
static int32_t gl_sext21(uint32_t x) { return (int32_t)(x << 11) >> 11; }

/* Add the three column sums held by the lane sums sa, sb (see the top) to t0, t1, t2 (int32_t variables). */
#define GL_TAKE(sa, sb, t0, t1, t2)                                                    \
  {                                                                                    \
    const int32_t s0 = gl_sext21(sa);                                                  \
    const uint32_t s1_low = ((sa) - (uint32_t)s0) >> 21; /* S1 mod 2^11 */             \
    const uint32_t rest = (sb) - (s1_low << 10);         /* S2 + 2^21 (S1 - s1_low) / 2^11 */ \
    const int32_t s2 = gl_sext21(rest);                                                \
    const int32_t s1_high = (int32_t)(rest - (uint32_t)s2) >> 21;                      \
    t0 += s0;                                                                          \
    t1 += (int32_t)(s1_low + ((uint32_t)s1_high << 11));                               \
    t2 += s2;                                                                          \
  }

/* The six sums of one row (row .. last) by the panel at w into the int32_t variables t0 .. t5, w left at the
   next panel; k_chunk steps at a time between takes. */
#define GL_PANEL_SUMS(row, last, w, k_chunk)                                                                 \
  int32_t t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4 = 0, t5 = 0;                                                    \
  {                                                                                                          \
    const int8_t *x = row;                                                                                   \
    while (x != last) {                                                                                      \
      const int8_t *const end = last - x > k_chunk ? x + k_chunk : last;                                     \
      const int8_t *const group_end = x + ((end - x) & ~3);                                                  \
      uint32_t a0 = 0, b0 = 0, a1 = 0, b1 = 0;                                                               \
      while (x != group_end) {                                                                               \
        GL_STEP(0) GL_STEP(1) GL_STEP(2) GL_STEP(3)                                                          \
        x += 4, w += 16;                                                                                     \
      }                                                                                                      \
      while (x != end) {                                                                                     \
        GL_STEP(0)                                                                                           \
        x += 1, w += 4;                                                                                      \
      }                                                                                                      \
      GL_TAKE(a0, b0, t0, t1, t2)                                                                            \
      GL_TAKE(a1, b1, t3, t4, t5)                                                                            \
    }                                                                                                        \
  }
#define GL_STEP(u)                                                                                      \
  {                                                                                                     \
    const uint32_t v = (uint32_t)(int32_t)x[u];                                                         \
    a0 += v * w[4 * (u)], b0 += v * w[4 * (u) + 1], a1 += v * w[4 * (u) + 2], b1 += v * w[4 * (u) + 3]; \
    GL_IN_ORDER();                                                                                      \
  }

/* GL_PANEL_SUMS for two panels at once, w and v (the next panel), into t0 .. t11: each activation is loaded once
   for twelve columns. */
#define GL_PAIR_SUMS(row, last, w, v, k_chunk)                                                               \
  int32_t t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4 = 0, t5 = 0, t6 = 0, t7 = 0, t8 = 0, t9 = 0, t10 = 0, t11 = 0; \
  {                                                                                                          \
    const int8_t *x = row;                                                                                   \
    while (x != last) {                                                                                      \
      const int8_t *const end = last - x > k_chunk ? x + k_chunk : last;                                     \
      const int8_t *const group_end = x + ((end - x) & ~3);                                                  \
      uint32_t a0 = 0, b0 = 0, a1 = 0, b1 = 0, a2 = 0, b2 = 0, a3 = 0, b3 = 0;                               \
      while (x != group_end) {                                                                               \
        GL_PAIR_STEP(0) GL_PAIR_STEP(1) GL_PAIR_STEP(2) GL_PAIR_STEP(3)                                      \
        x += 4, w += 16, v += 16;                                                                            \
      }                                                                                                      \
      while (x != end) {                                                                                     \
        GL_PAIR_STEP(0)                                                                                      \
        x += 1, w += 4, v += 4;                                                                              \
      }                                                                                                      \
      GL_TAKE(a0, b0, t0, t1, t2)                                                                            \
      GL_TAKE(a1, b1, t3, t4, t5)                                                                            \
      GL_TAKE(a2, b2, t6, t7, t8)                                                                            \
      GL_TAKE(a3, b3, t9, t10, t11)                                                                          \
    }                                                                                                        \
  }
#define GL_PAIR_STEP(u)                                                                                   \
  {                                                                                                       \
    const uint32_t z = (uint32_t)(int32_t)x[u];                                                           \
    a0 += z * w[4 * (u)], b0 += z * w[4 * (u) + 1], a1 += z * w[4 * (u) + 2], b1 += z * w[4 * (u) + 3];  \
    GL_IN_ORDER();                                                                                        \
    a2 += z * v[4 * (u)], b2 += z * v[4 * (u) + 1], a3 += z * v[4 * (u) + 2], b3 += z * v[4 * (u) + 3];  \
    GL_IN_ORDER();                                                                                        \
  }

/* The sums of one row by `count` panels from w on: s[6 p + j] for column j of panel p. */
static GL_NOINLINE void gl_row_1(const int8_t *row, const uint32_t *w, int32_t count, int32_t k_dim,
                                 int32_t k_chunk, int32_t *s) {
  const int8_t *const last = row + k_dim;
  int32_t p;
  for (p = 0; p < count; ++p, s += DPL_GEMM_S8_LANES_PANEL) {
    GL_PANEL_SUMS(row, last, w, k_chunk)
    s[0] = t0, s[1] = t1, s[2] = t2, s[3] = t3, s[4] = t4, s[5] = t5;
  }
}

/* One row by `width` columns (whole panels but maybe the last) requantized to int8 as it goes, when every shift is
   above 32 (dpl_requant_fixed_high): no sums stored and read back. mul, shift and col_add (the bias) start at this
   call's column 0. */
static GL_NOINLINE void gl_row_1_fixed(const int8_t *row, const uint32_t *w, int32_t width, int32_t k_dim,
                                       int32_t k_chunk, uint32_t row_corr, const uint32_t *col_add,
                                       const int32_t *mul, const int32_t *shift, const dpl_requant_t *rq, int8_t *y) {
  const int8_t *const last = row + k_dim;
  const int32_t out_zp = rq->out_zp, lo = rq->lo, hi = rq->hi;
  const uint32_t range = (uint32_t)hi - (uint32_t)lo;
  int8_t *const y_end = y + width;
#define GL_OUT(c, t)                                                                                     \
  y[c] = (int8_t)dpl_requant_fixed_high((int32_t)((uint32_t)(t) + row_corr + col_add[c]), mul[c],       \
                                        shift[c] - 33, out_zp, lo, hi, range);
  while (y_end - y >= 2 * DPL_GEMM_S8_LANES_PANEL) {
    const uint32_t *v = w + 4 * k_dim;
    GL_PAIR_SUMS(row, last, w, v, k_chunk)
    GL_OUT(0, t0) GL_OUT(1, t1) GL_OUT(2, t2) GL_OUT(3, t3) GL_OUT(4, t4) GL_OUT(5, t5)
    GL_OUT(6, t6) GL_OUT(7, t7) GL_OUT(8, t8) GL_OUT(9, t9) GL_OUT(10, t10) GL_OUT(11, t11)
    w = v, y += 2 * DPL_GEMM_S8_LANES_PANEL, col_add += 2 * DPL_GEMM_S8_LANES_PANEL;
    mul += 2 * DPL_GEMM_S8_LANES_PANEL, shift += 2 * DPL_GEMM_S8_LANES_PANEL;
  }
  while (y_end - y >= DPL_GEMM_S8_LANES_PANEL) {
    GL_PANEL_SUMS(row, last, w, k_chunk)
    GL_OUT(0, t0) GL_OUT(1, t1) GL_OUT(2, t2) GL_OUT(3, t3) GL_OUT(4, t4) GL_OUT(5, t5)
    y += DPL_GEMM_S8_LANES_PANEL, col_add += DPL_GEMM_S8_LANES_PANEL, mul += DPL_GEMM_S8_LANES_PANEL;
    shift += DPL_GEMM_S8_LANES_PANEL;
  }
  if (y != y_end) { /* the last panel's columns */
    int32_t c;
    GL_PANEL_SUMS(row, last, w, k_chunk)
    {
      const int32_t sums[DPL_GEMM_S8_LANES_PANEL] = {t0, t1, t2, t3, t4, t5};
      for (c = 0; c < y_end - y; ++c) GL_OUT(c, sums[c])
    }
  }
#undef GL_OUT
}
#undef GL_STEP
#undef GL_PAIR_STEP

/* The six sums of rows r0 and r1 (r0 .. last) by the panel at w into t0 .. t5 and u0 .. u5, w left at the next
   panel: the words are loaded once for both rows. */
#define GL_PANEL_SUMS_2(r0, r1, last, w, k_chunk)                                                            \
  int32_t t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4 = 0, t5 = 0, u0 = 0, u1 = 0, u2 = 0, u3 = 0, u4 = 0, u5 = 0;    \
  {                                                                                                          \
    const int8_t *x0 = r0, *x1 = r1;                                                                         \
    while (x0 != last) {                                                                                     \
      const int8_t *const end = last - x0 > k_chunk ? x0 + k_chunk : last;                                   \
      const int8_t *const group_end = x0 + ((end - x0) & ~1);                                                \
      uint32_t a0 = 0, b0 = 0, a1 = 0, b1 = 0, c0 = 0, d0 = 0, c1 = 0, d1 = 0;                               \
      while (x0 != group_end) {                                                                              \
        GL_STEP_2(0) GL_STEP_2(1)                                                                            \
        x0 += 2, x1 += 2, w += 8;                                                                            \
      }                                                                                                      \
      if (x0 != end) {                                                                                       \
        GL_STEP_2(0)                                                                                         \
        x0 += 1, x1 += 1, w += 4;                                                                            \
      }                                                                                                      \
      GL_TAKE(a0, b0, t0, t1, t2)                                                                            \
      GL_TAKE(a1, b1, t3, t4, t5)                                                                            \
      GL_TAKE(c0, d0, u0, u1, u2)                                                                            \
      GL_TAKE(c1, d1, u3, u4, u5)                                                                            \
    }                                                                                                        \
  }
#define GL_STEP_2(u)                                                                        \
  {                                                                                         \
    const uint32_t v = (uint32_t)(int32_t)x0[u], z = (uint32_t)(int32_t)x1[u];              \
    uint32_t word = w[4 * (u)];                                                             \
    a0 += v * word, c0 += z * word;                                                         \
    word = w[4 * (u) + 1];                                                                  \
    b0 += v * word, d0 += z * word;                                                         \
    word = w[4 * (u) + 2];                                                                  \
    a1 += v * word, c1 += z * word;                                                         \
    word = w[4 * (u) + 3];                                                                  \
    b1 += v * word, d1 += z * word;                                                         \
    GL_IN_ORDER();                                                                          \
  }

/* The sums of rows r0 and r0 + lda by `count` panels from w on, into s and t (as gl_row_1). */
static GL_NOINLINE void gl_rows_2(const int8_t *r0, int32_t lda, const uint32_t *w, int32_t count,
                                  int32_t k_dim, int32_t k_chunk, int32_t *s, int32_t *t) {
  const int8_t *const last = r0 + k_dim;
  int32_t p;
  for (p = 0; p < count; ++p, s += DPL_GEMM_S8_LANES_PANEL, t += DPL_GEMM_S8_LANES_PANEL) {
    GL_PANEL_SUMS_2(r0, r0 + lda, last, w, k_chunk)
    s[0] = t0, s[1] = t1, s[2] = t2, s[3] = t3, s[4] = t4, s[5] = t5;
    t[0] = u0, t[1] = u1, t[2] = u2, t[3] = u3, t[4] = u4, t[5] = u5;
  }
}

/* gl_row_1_fixed for rows r0 and r0 + lda (into y and y + ldy): a column's bias, multiplier and shift are loaded
   once for both. */
static GL_NOINLINE void gl_rows_2_fixed(const int8_t *r0, int32_t lda, const uint32_t *w, int32_t width,
                                        int32_t k_dim, int32_t k_chunk, const uint32_t *row_corr,
                                        const uint32_t *col_add, const int32_t *mul, const int32_t *shift,
                                        const dpl_requant_t *rq, int8_t *y, int32_t ldy) {
  const int8_t *const last = r0 + k_dim;
  const int32_t out_zp = rq->out_zp, lo = rq->lo, hi = rq->hi;
  const uint32_t range = (uint32_t)hi - (uint32_t)lo, corr0 = row_corr[0], corr1 = row_corr[1];
  int8_t *const y_end = y + width;
#define GL_OUT_2(c, t, u)                                                                                 \
  {                                                                                                       \
    const uint32_t add = col_add[c];                                                                      \
    const int32_t m = mul[c], sh = shift[c] - 33;                                                         \
    y[c] = (int8_t)dpl_requant_fixed_high((int32_t)((uint32_t)(t) + corr0 + add), m, sh, out_zp, lo, hi, range); \
    y[ldy + (c)] = (int8_t)dpl_requant_fixed_high((int32_t)((uint32_t)(u) + corr1 + add), m, sh, out_zp, lo, hi, \
                                                  range);                                                 \
  }
  while (y_end - y >= DPL_GEMM_S8_LANES_PANEL) {
    GL_PANEL_SUMS_2(r0, r0 + lda, last, w, k_chunk)
    GL_OUT_2(0, t0, u0) GL_OUT_2(1, t1, u1) GL_OUT_2(2, t2, u2) GL_OUT_2(3, t3, u3) GL_OUT_2(4, t4, u4)
    GL_OUT_2(5, t5, u5)
    y += DPL_GEMM_S8_LANES_PANEL, col_add += DPL_GEMM_S8_LANES_PANEL, mul += DPL_GEMM_S8_LANES_PANEL;
    shift += DPL_GEMM_S8_LANES_PANEL;
  }
  if (y != y_end) { /* the last panel's columns */
    int32_t c;
    GL_PANEL_SUMS_2(r0, r0 + lda, last, w, k_chunk)
    {
      const int32_t first[DPL_GEMM_S8_LANES_PANEL] = {t0, t1, t2, t3, t4, t5};
      const int32_t second[DPL_GEMM_S8_LANES_PANEL] = {u0, u1, u2, u3, u4, u5};
      for (c = 0; c < y_end - y; ++c) GL_OUT_2(c, first[c], second[c])
    }
  }
#undef GL_OUT_2
}
#undef GL_STEP_2

/* panels whose sums are kept at a time (stack bytes: 2 rows x 4 per column) */
#define GL_PANELS 8

void dpl_gemm_s8_lanes(const int8_t *a, int32_t lda, const uint32_t *panels, int32_t k_chunk, void *y,
                       int32_t ldy, int32_t m_dim, int32_t n_dim, int32_t k_dim, int32_t b_zp,
                       const dpl_requant_t *rq) {
  enum { columns = GL_PANELS * DPL_GEMM_S8_LANES_PANEL };
  const int32_t *const bias = rq ? rq->bias : 0;
  const int32_t high_shifts = dpl_gemm_s8_high_shifts(rq, 0, n_dim);
  const int32_t out_elem = rq && rq->mode != DPL_REQUANT_NONE ? 1 : 4; /* bytes of an output */
  static const uint32_t no_bias[columns] = {0u};
  int32_t m0, n0;
  for (m0 = 0; m0 < m_dim; m0 += 2) {
    const int32_t rows = m_dim - m0 < 2 ? m_dim - m0 : 2;
    const int8_t *const row = a + m0 * lda;
    /* the weight zero point's share, -b_zp * rowsum_A (the activation zero point is folded into the bias) */
    uint32_t row_corr[2];
    int32_t i;
    for (i = 0; i < rows; ++i) {
      row_corr[i] = b_zp != 0 ? 0u - (uint32_t)b_zp * (uint32_t)dpl_gemm_s8_row_sum(row + i * lda, k_dim) : 0u;
    }
    for (n0 = 0; n0 < n_dim; n0 += columns) {
      const int32_t width = n_dim - n0 < columns ? n_dim - n0 : columns;
      const int32_t count = (width + DPL_GEMM_S8_LANES_PANEL - 1) / DPL_GEMM_S8_LANES_PANEL;
      const uint32_t *const w = panels + (uint32_t)(n0 / DPL_GEMM_S8_LANES_PANEL) * 4u * (uint32_t)k_dim;
      const uint32_t *const col_add = bias ? (const uint32_t *)bias + n0 : no_bias;
      int32_t s[2 * columns];
      if (rows == 2 && high_shifts) {
        gl_rows_2_fixed(row, lda, w, width, k_dim, k_chunk, row_corr, col_add, rq->mul + n0, rq->shift + n0, rq,
                        (int8_t *)y + m0 * ldy + n0, ldy);
        continue;
      } else if (rows == 2) {
        gl_rows_2(row, lda, w, count, k_dim, k_chunk, s, s + columns);
      } else if (high_shifts) {
        gl_row_1_fixed(row, w, width, k_dim, k_chunk, row_corr[0], col_add, rq->mul + n0, rq->shift + n0, rq,
                       (int8_t *)y + m0 * ldy + n0);
        continue;
      } else {
        gl_row_1(row, w, count, k_dim, k_chunk, s);
      }
      for (i = 0; i < rows; ++i) {
        dpl_gemm_s8_store(s + i * columns, 1, width, row_corr + i, col_add, n0,
                          (uint8_t *)y + out_elem * ((m0 + i) * ldy + n0), ldy, rq, high_shifts);
      }
    }
  }
}
