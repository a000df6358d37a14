/* dpl_softmax_f32: row-wise softmax over the last axis, rows split over the cores; see dpl_kernels.h. */
#include "dpl_kernels.h"

typedef struct {
  const float *x;
  float *y;
  int32_t rows, cols;
} softmax_work_t;

static void softmax_core(void *arg) {
  const softmax_work_t *w = (const softmax_work_t *)arg;
  const int32_t cols = w->cols;
  int32_t r, c, begin, end;
  dpl_core_share(w->rows, &begin, &end);
  for (r = begin; r < end; ++r) {
    const float *xr = w->x + r * cols;
    float *yr = w->y + r * cols;
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

void dpl_softmax_f32(const float *x, float *y, int32_t rows, int32_t cols, int32_t cores) {
  softmax_work_t work;
  if (rows <= 0 || cols <= 0) return;
  work.x = x;
  work.y = y;
  work.rows = rows;
  work.cols = cols;
  dpl_cluster_fork(cores < rows ? cores : rows, softmax_core, &work);
}
