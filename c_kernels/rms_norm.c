/* dpl_rms_norm: RMSNorm of each row, float or int8 output, over the cores; see dpl_kernels.h. */
#include "dpl_kernels.h"

typedef struct {
  const float *x;
  const float *weight;
  void *y;
  const dpl_quant_t *y_quant;
  int32_t rows, cols;
  float eps;
} rms_norm_work_t;

/* Normalize columns [c0, c1) of row r. Every core sums the whole row in order (the reference's order),
   so splitting a row's columns over the cores changes no bit. */
static void rms_norm_row(const rms_norm_work_t *w, int32_t r, int32_t c0, int32_t c1) {
  const int32_t cols = w->cols;
  const float *x = w->x + r * cols, *weight = w->weight;
  float total = 0.0f, inv;
  int32_t c;
  for (c = 0; c + 1 < cols; c += 2) { /* two squares a step, added in order: half the loop's overhead */
    total = total + x[c] * x[c];
    total = total + x[c + 1] * x[c + 1];
  }
  if (c < cols) total = total + x[c] * x[c];
  inv = 1.0f / sqrtf(total / (float)cols + w->eps);
  if (w->y_quant == NULL) {
    float *y = (float *)w->y + r * cols;
    for (c = c0; c + 1 < c1; c += 2) { /* two a step: half the loop's overhead */
      y[c] = (inv * x[c]) * weight[c];
      y[c + 1] = (inv * x[c + 1]) * weight[c + 1];
    }
    if (c < c1) y[c] = (inv * x[c]) * weight[c];
  } else {
    const dpl_quantizer_t q = dpl_quantizer(w->y_quant);
    int8_t *y = (int8_t *)w->y + r * cols;
    for (c = c0; c + 1 < c1; c += 2) { /* two a step: half the loop's overhead */
      y[c] = dpl_quantize_with((inv * x[c]) * weight[c], q);
      y[c + 1] = dpl_quantize_with((inv * x[c + 1]) * weight[c + 1], q);
    }
    if (c < c1) y[c] = dpl_quantize_with((inv * x[c]) * weight[c], q);
  }
}

/* Rows split over the cores; with fewer rows than cores (a decode step's one row), columns instead. */
static void rms_norm_core(void *arg) {
  const rms_norm_work_t *w = (const rms_norm_work_t *)arg;
  int32_t r, begin, end;
  if (w->rows >= dpl_core_count()) {
    dpl_core_share(w->rows, &begin, &end);
    for (r = begin; r < end; ++r) rms_norm_row(w, r, 0, w->cols);
  } else {
    dpl_core_share(w->cols, &begin, &end);
    for (r = 0; r < w->rows; ++r) rms_norm_row(w, r, begin, end);
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
  dpl_cluster_fork(cores, rms_norm_core, &work);
}
