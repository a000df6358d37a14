/*
 * The hand-written baseline: a Llama forward pass in plain fp32 C, one token per call (see llama.h).
 * Every loop is the obvious one, as a C programmer would write it for a microcontroller: sums in float,
 * in index order, no blocking, no SIMD, no threads.
 */
#include "llama.h"

#include <math.h>

#define HW_RMS_EPS 1e-5f

/* out = x / sqrt(mean(x^2) + eps) * weight */
static void rms_norm(float *out, const float *x, const float *weight, int32_t n) {
  float squares = 0.0f, inv;
  int32_t i;
  for (i = 0; i < n; ++i) squares += x[i] * x[i];
  inv = 1.0f / sqrtf(squares / (float)n + HW_RMS_EPS);
  for (i = 0; i < n; ++i) out[i] = (inv * x[i]) * weight[i];
}

/* out[rows] = matrix[rows][cols] . x[cols] */
static void mat_vec(float *out, const float *matrix, const float *x, int32_t rows, int32_t cols) {
  int32_t r, k;
  for (r = 0; r < rows; ++r) {
    const float *row = matrix + (int32_t)r * cols;
    float sum = 0.0f;
    for (k = 0; k < cols; ++k) sum += row[k] * x[k];
    out[r] = sum;
  }
}

/* Rotate the interleaved pairs (2i, 2i+1) of every head of vec by the position's angles. */
static void rotate(float *vec, int32_t heads, int32_t head_dim, const float *cos_row, const float *sin_row) {
  int32_t h, i;
  for (h = 0; h < heads; ++h) {
    float *head = vec + h * head_dim;
    for (i = 0; i < head_dim / 2; ++i) {
      const float a = head[2 * i], b = head[2 * i + 1];
      head[2 * i] = a * cos_row[i] - b * sin_row[i];
      head[2 * i + 1] = a * sin_row[i] + b * cos_row[i];
    }
  }
}

/* In place: exp(x - max) / sum */
static void softmax(float *x, int32_t n) {
  float largest = x[0], sum = 0.0f;
  int32_t i;
  for (i = 1; i < n; ++i) {
    if (x[i] > largest) largest = x[i];
  }
  for (i = 0; i < n; ++i) {
    x[i] = expf(x[i] - largest);
    sum += x[i];
  }
  for (i = 0; i < n; ++i) x[i] /= sum;
}

/* xb = causal attention of q over the cached keys and values 0..pos of one layer; query head h reads
   K/V head h / (n_heads / n_kv_heads) (grouped-query attention). */
static void attend(const hw_config_t *c, hw_buffers_t *s, const float *keys, const float *values, int32_t pos) {
  const int32_t head_dim = c->dim / c->n_heads, kv_dim = c->n_kv_heads * head_dim;
  const int32_t group = c->n_heads / c->n_kv_heads;
  const float scale = 1.0f / sqrtf((float)head_dim);
  int32_t h, t, i;
  for (h = 0; h < c->n_heads; ++h) {
    const float *q = s->q + h * head_dim;
    const int32_t kv_offset = (h / group) * head_dim;
    float *out = s->xb + h * head_dim;
    for (t = 0; t <= pos; ++t) {
      const float *k = keys + t * kv_dim + kv_offset;
      float dot = 0.0f;
      for (i = 0; i < head_dim; ++i) dot += q[i] * k[i];
      s->att[t] = dot * scale;
    }
    softmax(s->att, pos + 1);
    for (i = 0; i < head_dim; ++i) out[i] = 0.0f;
    for (t = 0; t <= pos; ++t) {
      const float *v = values + t * kv_dim + kv_offset;
      const float p = s->att[t];
      for (i = 0; i < head_dim; ++i) out[i] += p * v[i];
    }
  }
}

const float *hw_forward(const hw_config_t *c, const hw_weights_t *w, hw_buffers_t *s, int32_t token, int32_t pos) {
  const int32_t dim = c->dim, hidden = c->hidden_dim, head_dim = c->dim / c->n_heads;
  const int32_t kv_dim = c->n_kv_heads * head_dim, half = head_dim / 2;
  const float *cos_row = w->rope_cos + pos * half, *sin_row = w->rope_sin + pos * half;
  int32_t layer, i;
  for (i = 0; i < dim; ++i) s->x[i] = w->token_embedding[token * dim + i];
  for (layer = 0; layer < c->n_layers; ++layer) {
    const int32_t cache_offset = layer * c->seq_len * kv_dim;
    float *k = s->key_cache + cache_offset + pos * kv_dim;
    float *v = s->value_cache + cache_offset + pos * kv_dim;
    /* attention block: this position's q, and its k and v straight into the cache */
    rms_norm(s->xb, s->x, w->rms_att + layer * dim, dim);
    mat_vec(s->q, w->wq + layer * dim * dim, s->xb, dim, dim);
    mat_vec(k, w->wk + layer * kv_dim * dim, s->xb, kv_dim, dim);
    mat_vec(v, w->wv + layer * kv_dim * dim, s->xb, kv_dim, dim);
    rotate(s->q, c->n_heads, head_dim, cos_row, sin_row);
    rotate(k, c->n_kv_heads, head_dim, cos_row, sin_row);
    attend(c, s, s->key_cache + cache_offset, s->value_cache + cache_offset, pos);
    mat_vec(s->xb2, w->wo + layer * dim * dim, s->xb, dim, dim);
    for (i = 0; i < dim; ++i) s->x[i] += s->xb2[i];
    /* feed-forward block: w2(silu(w1 x) * w3 x) */
    rms_norm(s->xb, s->x, w->rms_ffn + layer * dim, dim);
    mat_vec(s->hb, w->w1 + layer * hidden * dim, s->xb, hidden, dim);
    mat_vec(s->hb2, w->w3 + layer * hidden * dim, s->xb, hidden, dim);
    for (i = 0; i < hidden; ++i) {
      const float gate = s->hb[i];
      s->hb[i] = gate * (1.0f / (1.0f + expf(-gate))) * s->hb2[i];
    }
    mat_vec(s->xb2, w->w2 + layer * dim * hidden, s->hb, dim, hidden);
    for (i = 0; i < dim; ++i) s->x[i] += s->xb2[i];
  }
  rms_norm(s->xb, s->x, w->rms_final, dim);
  mat_vec(s->logits, w->wcls, s->xb, c->vocab_size, dim);
  return s->logits;
}

int32_t hw_argmax(const float *logits, int32_t n) {
  int32_t i, best = 0;
  for (i = 1; i < n; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}
