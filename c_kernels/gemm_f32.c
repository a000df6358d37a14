/* dpl_gemm_f32: y[m][n] = sum_k a[m][k] * B(k, n) (+ bias[n]), see dpl_kernels.h. */
#include "dpl_kernels.h"

void dpl_gemm_f32(const float *a, int32_t lda, const float *b, int32_t ldb, int32_t b_transposed,
                  const float *bias, float *y, int32_t ldy, int32_t m_dim, int32_t n_dim, int32_t k_dim) {
  /* B(k, n) for a fixed n is a column walked with stride bstep. */
  const int32_t bstep = b_transposed ? 1 : ldb;
  const int32_t bcol = b_transposed ? ldb : 1; /* distance between consecutive columns */
  int32_t m, n, kk;
  for (m = 0; m < m_dim; ++m) {
    const float *arow = a + m * lda;
    float *yrow = y + m * ldy;
    n = 0;
    /* two output columns at a time share the loads of the a row */
    for (; n + 1 < n_dim; n += 2) {
      const float *pa = arow;
      const float *pb0 = b + n * bcol;
      const float *pb1 = pb0 + bcol;
      float acc0 = 0.0f, acc1 = 0.0f;
      for (kk = 0; kk < k_dim; ++kk) {
        const float av = *pa++;
        acc0 += av * *pb0;
        acc1 += av * *pb1;
        pb0 += bstep;
        pb1 += bstep;
      }
      if (bias) {
        acc0 += bias[n];
        acc1 += bias[n + 1];
      }
      yrow[n] = acc0;
      yrow[n + 1] = acc1;
    }
    if (n < n_dim) {
      const float *pa = arow;
      const float *pb0 = b + n * bcol;
      float acc0 = 0.0f;
      for (kk = 0; kk < k_dim; ++kk) {
        acc0 += *pa++ * *pb0;
        pb0 += bstep;
      }
      if (bias) acc0 += bias[n];
      yrow[n] = acc0;
    }
  }
}
