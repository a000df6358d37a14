/* dpl_attention_f32: o = softmax(q k^T * scale + mask [causal]) v per batch and head with
   strided (batch, head, seq, feature) operands, see dpl_kernels.h. */
#include <float.h>
#include <math.h>

#include "dpl_kernels.h"

void dpl_attention_f32(const float *q, const float *k, const float *v, const float *mask,
                       float *o, const dpl_attention_shape_t *shape,
                       const dpl_strides_t *qs, const dpl_strides_t *ks, const dpl_strides_t *vs,
                       const dpl_strides_t *ms, const dpl_strides_t *os, float *scratch) {
  const int32_t q_len = shape->q_len, kv_len = shape->kv_len;
  const int32_t qk_dim = shape->qk_dim, v_dim = shape->v_dim;
  const float scale = shape->scale;
  /* query head h reads kv head h / group */
  const int32_t group = (shape->kv_heads > 0 && shape->kv_heads <= shape->heads)
                            ? shape->heads / shape->kv_heads
                            : 1;
  int32_t bi, h, i, j, d;

  for (bi = 0; bi < shape->batch; ++bi) {
    for (h = 0; h < shape->heads; ++h) {
      const int32_t hk = h / group;
      const float *qbh = q + bi * qs->batch + h * qs->head;
      const float *kbh = k + bi * ks->batch + hk * ks->head;
      const float *vbh = v + bi * vs->batch + hk * vs->head;
      const float *mbh = mask ? mask + bi * ms->batch + h * ms->head : mask;
      float *obh = o + bi * os->batch + h * os->head;

      for (i = 0; i < q_len; ++i) {
        const float *qrow = qbh + i * qs->seq;
        float *orow = obh + i * os->seq;
        /* keys 0 .. visible-1 take part, the rest get weight exactly 0 */
        int32_t visible = kv_len;
        float mx, sum = 0.0f;
        if (shape->causal == DPL_CAUSAL_TOP_LEFT) {
          visible = i + 1;
        } else if (shape->causal == DPL_CAUSAL_BOTTOM_RIGHT) {
          visible = i + 1 + (kv_len - q_len);
        }
        if (visible > kv_len) visible = kv_len;

        mx = -INFINITY;
        for (j = 0; j < visible; ++j) {
          const float *pq = qrow;
          const float *pk = kbh + j * ks->seq;
          float dot = 0.0f;
          for (d = 0; d < qk_dim; ++d) {
            dot += *pq * *pk;
            pq += qs->feat;
            pk += ks->feat;
          }
          dot = dot * scale;
          if (mbh) dot += mbh[i * ms->seq + j * ms->feat];
          scratch[j] = dot;
          if (j == 0 || dot > mx) mx = dot; /* seeded from score 0 so a NaN propagates */
        }

        /* no visible key (causal), or every visible score is -inf (additive mask): output 0 */
        if (visible <= 0 || mx < -FLT_MAX) {
          for (d = 0; d < v_dim; ++d) orow[d * os->feat] = 0.0f;
          continue;
        }

        for (j = 0; j < visible; ++j) {
          const float e = expf(scratch[j] - mx);
          scratch[j] = e;
          sum += e;
        }
        /* divide (not multiply by 1/sum), like TVM's softmax */
        for (j = 0; j < visible; ++j) scratch[j] = scratch[j] / sum;

        for (d = 0; d < v_dim; ++d) {
          const float *pv = vbh + d * vs->feat;
          float acc = 0.0f;
          for (j = 0; j < visible; ++j) {
            acc += scratch[j] * *pv;
            pv += vs->seq;
          }
          orow[d * os->feat] = acc;
        }
      }
    }
  }
}
