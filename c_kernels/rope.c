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

static void rope_core(void *arg) {
  const rope_work_t *w = (const rope_work_t *)arg;
  int32_t row, i, begin, end;
  dpl_core_share(w->tokens * w->heads, &begin, &end);
  for (row = begin; row < end; ++row) {
    const int32_t base = row * w->half * 2;
    const float *c = w->cos + (row / w->heads) * w->cs_token_stride;
    const float *s = w->sin + (row / w->heads) * w->cs_token_stride;
    float *y = w->y + base;
    for (i = 0; i < w->half; ++i) {
      float x0, x1;
      if (w->x_quant == NULL) {
        x0 = ((const float *)w->x)[base + 2 * i];
        x1 = ((const float *)w->x)[base + 2 * i + 1];
      } else {
        x0 = dpl_dequantize_s8(((const int8_t *)w->x)[base + 2 * i], w->x_quant);
        x1 = dpl_dequantize_s8(((const int8_t *)w->x)[base + 2 * i + 1], w->x_quant);
      }
      y[2 * i] = x0 * c[i] - x1 * s[i];
      y[2 * i + 1] = x0 * s[i] + x1 * c[i];
    }
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
