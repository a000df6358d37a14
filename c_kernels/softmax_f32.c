/* dpl_softmax_f32: row-wise softmax over the last axis, see dpl_kernels.h. */
#include "dpl_kernels.h"

void dpl_softmax_f32(const float *x, float *y, int32_t rows, int32_t cols) {
  int32_t r, c;
  if (cols <= 0) return;
  for (r = 0; r < rows; ++r) {
    const float *xr = x + r * cols;
    float *yr = y + r * cols;
    float mx = xr[0];
    float sum = 0.0f;
    for (c = 1; c < cols; ++c) {
      if (xr[c] > mx) mx = xr[c];
    }
    for (c = 0; c < cols; ++c) {
      const float e = dpl_expf(xr[c] - mx);
      yr[c] = e;
      sum += e;
    }
    /* divide (not multiply by 1/sum), like TVM's softmax */
    for (c = 0; c < cols; ++c) yr[c] = yr[c] / sum;
  }
}
