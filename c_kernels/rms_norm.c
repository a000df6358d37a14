/* dpl_rms_norm: RMSNorm of each row, rows split over the cores, float or int8 output; see dpl_kernels.h. */
#include "dpl_kernels.h"

typedef struct {
  const float *x;
  const float *weight;
  void *y;
  const dpl_quant_t *y_quant;
  int32_t rows, cols;
  float eps;
} rms_norm_work_t;

static void rms_norm_core(void *arg) {
  const rms_norm_work_t *w = (const rms_norm_work_t *)arg;
  int32_t r, c, begin, end;
  dpl_core_share(w->rows, &begin, &end);
  for (r = begin; r < end; ++r) {
    const float *x = w->x + r * w->cols;
    float total = 0.0f, inv;
    for (c = 0; c < w->cols; ++c) total = total + x[c] * x[c];
    inv = 1.0f / sqrtf(total / (float)w->cols + w->eps);
    if (w->y_quant == NULL) {
      float *y = (float *)w->y + r * w->cols;
      for (c = 0; c < w->cols; ++c) y[c] = (inv * x[c]) * w->weight[c];
    } else {
      int8_t *y = (int8_t *)w->y + r * w->cols;
      for (c = 0; c < w->cols; ++c) y[c] = dpl_quantize_s8((inv * x[c]) * w->weight[c], w->y_quant);
    }
  }
}

void dpl_rms_norm(const float *x, const float *weight, void *y, const dpl_quant_t *y_quant, int32_t rows,
                  int32_t cols, float eps, int32_t cores) {
  rms_norm_work_t work;
  work.x = x;
  work.weight = weight;
  work.y = y;
  work.y_quant = y_quant;
  work.rows = rows;
  work.cols = cols;
  work.eps = eps;
  /* more cores than rows would only wait */
  dpl_cluster_fork(cores < rows ? cores : rows, rms_norm_core, &work);
}
