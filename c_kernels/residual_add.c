/* dpl_residual_add: y = a + b element-wise over the cores, b float or dequantized int8; see dpl_kernels.h. */
#include "dpl_kernels.h"

typedef struct {
  const float *a;
  const void *b;
  const dpl_quant_t *b_quant;
  float *y;
  int32_t n;
} residual_add_work_t;

static void residual_add_core(void *arg) {
  const residual_add_work_t *w = (const residual_add_work_t *)arg;
  const float *a = w->a;
  float *y = w->y;
  int32_t i, begin, end;
  dpl_core_share(w->n, &begin, &end);
  if (w->b_quant == NULL) {
    const float *b = (const float *)w->b;
    for (i = begin; i + 1 < end; i += 2) { /* two a step: half the loop's overhead */
      y[i] = a[i] + b[i];
      y[i + 1] = a[i + 1] + b[i + 1];
    }
    if (i < end) y[i] = a[i] + b[i];
  } else {
    const dpl_quantizer_t q = dpl_quantizer(w->b_quant);
    const int8_t *b = (const int8_t *)w->b;
    for (i = begin; i + 1 < end; i += 2) { /* two a step: half the loop's overhead */
      y[i] = a[i] + dpl_dequantize_with(b[i], q);
      y[i + 1] = a[i + 1] + dpl_dequantize_with(b[i + 1], q);
    }
    if (i < end) y[i] = a[i] + dpl_dequantize_with(b[i], q);
  }
}

void dpl_residual_add(const float *a, const void *b, const dpl_quant_t *b_quant, float *y, int32_t n, int32_t cores) {
  residual_add_work_t work;
  work.a = a;
  work.b = b;
  work.b_quant = b_quant;
  work.y = y;
  work.n = n;
  dpl_cluster_fork(cores, residual_add_core, &work);
}
