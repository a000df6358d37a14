/* dpl_swiglu: silu(a) * b element-wise over the cores, each operand float or int8; see dpl_kernels.h. */
#include "dpl_kernels.h"

typedef struct {
  const void *a;
  const dpl_quant_t *a_quant;
  const void *b;
  const dpl_quant_t *b_quant;
  void *y;
  const dpl_quant_t *y_quant;
  int32_t n;
} swiglu_work_t;

static float swiglu_operand(const void *x, const dpl_quant_t *quant, int32_t i) {
  return quant == NULL ? ((const float *)x)[i] : dpl_dequantize_s8(((const int8_t *)x)[i], quant);
}

static void swiglu_core(void *arg) {
  const swiglu_work_t *w = (const swiglu_work_t *)arg;
  int32_t i, begin, end;
  dpl_core_share(w->n, &begin, &end);
  for (i = begin; i < end; ++i) {
    const float a = swiglu_operand(w->a, w->a_quant, i);
    /* TVM's silu: x * sigmoid(x), sigmoid(x) = 1 / (1 + exp(0 - x)) */
    const float y = (a * (1.0f / (1.0f + expf(0.0f - a)))) * swiglu_operand(w->b, w->b_quant, i);
    if (w->y_quant == NULL) {
      ((float *)w->y)[i] = y;
    } else {
      ((int8_t *)w->y)[i] = dpl_quantize_s8(y, w->y_quant);
    }
  }
}

void dpl_swiglu(const void *a, const dpl_quant_t *a_quant, const void *b, const dpl_quant_t *b_quant, void *y,
                const dpl_quant_t *y_quant, int32_t n, int32_t cores) {
  swiglu_work_t work;
  work.a = a;
  work.a_quant = a_quant;
  work.b = b;
  work.b_quant = b_quant;
  work.y = y;
  work.y_quant = y_quant;
  work.n = n;
  dpl_cluster_fork(cores, swiglu_core, &work);
}
