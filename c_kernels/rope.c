/* dpl_rope: rotary embedding on interleaved pairs, (token, head) rows split over the cores; see dpl_kernels.h. */
#include "dpl_kernels.h"

typedef struct {
  const void *x;
  const dpl_quant_t *x_quant;
  const float *cos, *sin;
  int32_t cs_token_stride;
  float *y;
  int32_t tokens, heads, half;
} rope_work_t;

/* Rows [begin, end); x_s8: x is int8 (a constant at each call, so each variant loses its branch). */
static DPL_ALWAYS_INLINE void rope_rows(const rope_work_t *w, int32_t begin, int32_t end, int x_s8) {
  const dpl_quantizer_t q = x_s8 ? dpl_quantizer(w->x_quant) : dpl_quantizer_none();
  const int32_t half = w->half, heads = w->heads, stride = w->cs_token_stride;
  int32_t row, i;
  for (row = begin; row < end; ++row) {
    const float *xf = (const float *)w->x + row * half * 2;
    const int8_t *x8 = (const int8_t *)w->x + row * half * 2;
    const float *c = w->cos + (row / heads) * stride;
    const float *s = w->sin + (row / heads) * stride;
    float *y = w->y + row * half * 2;
    for (i = 0; i < half; ++i) {
      const float x0 = x_s8 ? dpl_dequantize_with(x8[2 * i], q) : xf[2 * i];
      const float x1 = x_s8 ? dpl_dequantize_with(x8[2 * i + 1], q) : xf[2 * i + 1];
      const float ci = c[i], si = s[i]; /* read before y is written (which may alias them) */
      y[2 * i] = x0 * ci - x1 * si;
      y[2 * i + 1] = x0 * si + x1 * ci;
    }
  }
}

static void rope_core(void *arg) {
  const rope_work_t *w = (const rope_work_t *)arg;
  int32_t begin, end;
  dpl_core_share(w->tokens * w->heads, &begin, &end);
  if (w->x_quant == NULL) {
    rope_rows(w, begin, end, 0);
  } else {
    rope_rows(w, begin, end, 1);
  }
}

void dpl_rope(const void *x, const dpl_quant_t *x_quant, const float *cos, const float *sin,
              int32_t cs_token_stride, float *y, int32_t tokens, int32_t heads, int32_t half, int32_t cores) {
  rope_work_t work;
  work.x = x;
  work.x_quant = x_quant;
  work.cos = cos;
  work.sin = sin;
  work.cs_token_stride = cs_token_stride;
  work.y = y;
  work.tokens = tokens;
  work.heads = heads;
  work.half = half;
  dpl_cluster_fork(cores < tokens * heads ? cores : tokens * heads, rope_core, &work);
}
