/* dpl_gemm_s8: int8 x int8 -> int32 GEMM with zero points and requantization, see
   dpl_kernels.h. Bit-exact against tvm_deeploy/reference.py (gemm_s8, requantize_*).

   Zero points are not subtracted in the inner loop. With A' = A - a_zp and B' = B - b_zp:
     sum_k A'B' = sum_k AB - b_zp * rowsum_A[m] - a_zp * colsum_B[n] + k * a_zp * b_zp.
   Row sums are a cheap pass per pair of rows (only when b_zp != 0); column sums are
   accumulated alongside the products (only when a_zp != 0). The correction is done modulo
   2^32 in uint32_t: the true result fits int32 (k_dim * 65025 < 2^31), so the wrapped sum
   is exact whatever the intermediate values are. */
#include "dpl_kernels.h"

/* Every int32 value produced by wrap-around arithmetic goes through here: uint32_t -> int32_t
   is implementation-defined above INT32_MAX; gcc (and every target we build for) wraps mod 2^32. */
static int32_t gs8_to_i32(uint32_t x) { return (int32_t)x; }

static int32_t gs8_row_sum(const int8_t *p, int32_t k_dim) {
  int32_t s = 0;
  int32_t kk;
  for (kk = 0; kk < k_dim; ++kk) s += *p++;
  return s;
}

/* Apply bias and the requantization of rq to one accumulator and store it at y[idx]. */
static void gs8_store(uint32_t acc_u, int32_t n, int32_t idx, void *y, const dpl_requant_t *rq) {
  int32_t mode = DPL_REQUANT_NONE;
  int32_t acc;
  if (rq) {
    mode = rq->mode;
    if (rq->bias) acc_u += (uint32_t)rq->bias[n]; /* int32 add, wraps */
  }
  acc = gs8_to_i32(acc_u);
  if (mode == DPL_REQUANT_NONE) {
    ((int32_t *)y)[idx] = acc;
  } else if (mode == DPL_REQUANT_FIXED) {
    const int32_t sh = rq->shift[n]; /* 1 <= sh <= 62 */
    /* |acc * mul| <= 2^62, so adding the rounding term 2^61 cannot overflow int64.
       >> on a negative int64 is an arithmetic shift (implementation-defined; gcc guarantees it). */
    int64_t t = (int64_t)acc * (int64_t)rq->mul[n];
    t = (t + ((int64_t)1 << (sh - 1))) >> sh;
    t += rq->out_zp;
    if (t < rq->lo) t = rq->lo;
    if (t > rq->hi) t = rq->hi;
    ((int8_t *)y)[idx] = (int8_t)t;
  } else if (mode == DPL_REQUANT_INT_OPS) {
    int32_t t = acc;
    if (rq->mul) t = gs8_to_i32((uint32_t)t * (uint32_t)rq->mul[n]);
    if (rq->add) t = gs8_to_i32((uint32_t)t + (uint32_t)rq->add[n]);
    /* 0 <= shift <= 31; >> on a negative int32 is arithmetic (implementation-defined; gcc guarantees it) */
    if (rq->shift) t = t >> rq->shift[n];
    t = gs8_to_i32((uint32_t)t + (uint32_t)rq->out_zp);
    if (t < rq->lo) t = rq->lo;
    if (t > rq->hi) t = rq->hi;
    ((int8_t *)y)[idx] = (int8_t)t;
  }
  /* an unknown mode stores nothing */
}

/* Sums of a 2x2 (or, with two_rows == 0, 1x2) output block over k, plus the column sums of B
   when col_sums is set. Called with constant flags, so the compiler specializes each loop. */
typedef struct gs8_block {
  int32_t s00, s01, s10, s11; /* sum a*b; |.| <= k * 2^14, no overflow */
  int32_t cs0, cs1;           /* column sums of B */
} gs8_block_t;

static inline gs8_block_t gs8_block_sums(const int8_t *pa0, const int8_t *pa1, const int8_t *pb0,
                                         const int8_t *pb1, int32_t k_dim, int32_t bstep,
                                         int32_t two_rows, int32_t col_sums) {
  gs8_block_t r = {0, 0, 0, 0, 0, 0};
  int32_t kk;
  for (kk = 0; kk < k_dim; ++kk) {
    const int32_t a0 = *pa0++;
    const int32_t b0 = *pb0, b1 = *pb1;
    pb0 += bstep;
    pb1 += bstep;
    r.s00 += a0 * b0;
    r.s01 += a0 * b1;
    if (two_rows) {
      const int32_t a1 = *pa1++;
      r.s10 += a1 * b0;
      r.s11 += a1 * b1;
    }
    if (col_sums) {
      r.cs0 += b0;
      r.cs1 += b1;
    }
  }
  return r;
}

void dpl_gemm_s8(const int8_t *a, int32_t lda, const int8_t *b, int32_t ldb, int32_t b_transposed,
                 void *y, int32_t ldy, int32_t m_dim, int32_t n_dim, int32_t k_dim,
                 int32_t a_zp, int32_t b_zp, const dpl_requant_t *rq) {
  /* B(k, n) for a fixed n is a column walked with stride bstep; consecutive columns start bcol apart. */
  const int32_t bstep = b_transposed ? 1 : ldb;
  const int32_t bcol = b_transposed ? ldb : 1;
  const uint32_t kzz = (uint32_t)k_dim * (uint32_t)a_zp * (uint32_t)b_zp;
  int32_t m, n;

  /* 2x2 output blocks; an odd last column reuses the block with both B pointers on the same
     column (its second result is dropped), an odd last row has its own 1x2 loop so that
     m_dim == 1 (GEMV) does not pay twice. */
  for (m = 0; m < m_dim; m += 2) {
    const int32_t two_rows = m + 1 < m_dim;
    const int8_t *arow0 = a + m * lda;
    const int8_t *arow1 = two_rows ? arow0 + lda : arow0; /* never read when !two_rows */
    uint32_t rcorr0 = kzz, rcorr1 = kzz; /* k*a_zp*b_zp - b_zp*rowsum */
    if (b_zp != 0) {
      rcorr0 -= (uint32_t)b_zp * (uint32_t)gs8_row_sum(arow0, k_dim);
      if (two_rows) rcorr1 -= (uint32_t)b_zp * (uint32_t)gs8_row_sum(arow1, k_dim);
    }
    for (n = 0; n < n_dim; n += 2) {
      const int32_t two_cols = n + 1 < n_dim;
      const int8_t *pb0 = b + n * bcol;
      const int8_t *pb1 = two_cols ? pb0 + bcol : pb0;
      gs8_block_t r;
      uint32_t ccorr0, ccorr1;
      const int32_t idx = m * ldy + n;
      if (two_rows) {
        r = a_zp != 0 ? gs8_block_sums(arow0, arow1, pb0, pb1, k_dim, bstep, 1, 1)
                      : gs8_block_sums(arow0, arow1, pb0, pb1, k_dim, bstep, 1, 0);
      } else {
        r = a_zp != 0 ? gs8_block_sums(arow0, arow1, pb0, pb1, k_dim, bstep, 0, 1)
                      : gs8_block_sums(arow0, arow1, pb0, pb1, k_dim, bstep, 0, 0);
      }
      ccorr0 = (uint32_t)a_zp * (uint32_t)r.cs0; /* 0 when a_zp == 0 */
      ccorr1 = (uint32_t)a_zp * (uint32_t)r.cs1;
      gs8_store((uint32_t)r.s00 + rcorr0 - ccorr0, n, idx, y, rq);
      if (two_cols) gs8_store((uint32_t)r.s01 + rcorr0 - ccorr1, n + 1, idx + 1, y, rq);
      if (two_rows) {
        gs8_store((uint32_t)r.s10 + rcorr1 - ccorr0, n, idx + ldy, y, rq);
        if (two_cols) gs8_store((uint32_t)r.s11 + rcorr1 - ccorr1, n + 1, idx + ldy + 1, y, rq);
      }
    }
  }
}
