/* dpl_swiglu: silu(a) * b element-wise over the cores, each operand float or int8; see dpl_kernels.h. */
#include "dpl_kernels.h"

typedef struct {
  const void *a;
  const float *a_silu;
  const void *b;
  const dpl_quant_t *b_quant;
  void *y;
  const dpl_quant_t *y_quant;
  int32_t n;
} swiglu_work_t;

/* Elements [begin, end); a_s8, b_s8, y_s8 say which operands are int8. Called with constants, so that each
   combination compiles to a loop without per-element branches. An int8 a has only 256 values: silu of each
   comes from the table. */
static DPL_ALWAYS_INLINE void swiglu_span(const swiglu_work_t *w, int32_t begin, int32_t end, int a_s8, int b_s8,
                                          int y_s8) {
  const float *silu_of = a_s8 ? w->a_silu + 128 : NULL; /* indexed by the int8 value */
  const dpl_quantizer_t bq = b_s8 ? dpl_quantizer(w->b_quant) : dpl_quantizer_none();
  const dpl_quantizer_t yq = y_s8 ? dpl_quantizer(w->y_quant) : dpl_quantizer_none();
  const float *af = (const float *)w->a, *bf = (const float *)w->b;
  const int8_t *a8 = (const int8_t *)w->a, *b8 = (const int8_t *)w->b;
  float *yf = (float *)w->y;
  int8_t *y8 = (int8_t *)w->y;
  int32_t i;
  for (i = begin; i < end; ++i) {
    const float b = b_s8 ? dpl_dequantize_with(b8[i], bq) : bf[i];
    float y;
    if (a_s8) {
      y = silu_of[a8[i]] * b;
    } else { /* TVM's silu: x * sigmoid(x), sigmoid(x) = 1 / (1 + exp(0 - x)) */
      y = (af[i] * (1.0f / (1.0f + dpl_expf(0.0f - af[i])))) * b;
    }
    if (y_s8) {
      y8[i] = dpl_quantize_with(y, yq);
    } else {
      yf[i] = y;
    }
  }
}

static void swiglu_core(void *arg) {
  const swiglu_work_t *w = (const swiglu_work_t *)arg;
  int32_t begin, end;
  dpl_core_share(w->n, &begin, &end);
  switch ((w->a_silu != NULL) + 2 * (w->b_quant != NULL) + 4 * (w->y_quant != NULL)) {
    case 0: swiglu_span(w, begin, end, 0, 0, 0); break;
    case 1: swiglu_span(w, begin, end, 1, 0, 0); break;
    case 2: swiglu_span(w, begin, end, 0, 1, 0); break;
    case 3: swiglu_span(w, begin, end, 1, 1, 0); break;
    case 4: swiglu_span(w, begin, end, 0, 0, 1); break;
    case 5: swiglu_span(w, begin, end, 1, 0, 1); break;
    case 6: swiglu_span(w, begin, end, 0, 1, 1); break;
    default: swiglu_span(w, begin, end, 1, 1, 1); break;
  }
}

void dpl_swiglu(const void *a, const float *a_silu, const void *b, const dpl_quant_t *b_quant, void *y,
                const dpl_quant_t *y_quant, int32_t n, int32_t cores) {
  swiglu_work_t work;
  work.a = a;
  work.a_silu = a_silu;
  work.b = b;
  work.b_quant = b_quant;
  work.y = y;
  work.y_quant = y_quant;
  work.n = n;
  dpl_cluster_fork(cores, swiglu_core, &work);
}
