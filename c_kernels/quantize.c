/* dpl_quantize: TVM's per-tensor quantize of float to int8, element-wise over the cores; see dpl_kernels.h. */
#include "dpl_kernels.h"

typedef struct {
  const float *x;
  const dpl_quant_t *quant;
  int8_t *y;
  int32_t n;
} quantize_work_t;

static void quantize_core(void *arg) {
  const quantize_work_t *w = (const quantize_work_t *)arg;
  const dpl_quantizer_t q = dpl_quantizer(w->quant);
  const float *x = w->x;
  int8_t *y = w->y;
  int32_t i, begin, end;
  dpl_core_share(w->n, &begin, &end);
  for (i = begin; i + 1 < end; i += 2) { /* two a step: half the loop's overhead */
    y[i] = dpl_quantize_with(x[i], q);
    y[i + 1] = dpl_quantize_with(x[i + 1], q);
  }
  if (i < end) y[i] = dpl_quantize_with(x[i], q);
}

void dpl_quantize(const float *x, const dpl_quant_t *quant, int8_t *y, int32_t n, int32_t cores) {
  quantize_work_t work;
  work.x = x;
  work.quant = quant;
  work.y = y;
  work.n = n;
  dpl_cluster_fork(cores, quantize_core, &work);
}
