/*
 * A Llama decoder's forward pass in plain fp32 C, one token at a time: the hand-written baseline the
 * compiled program is measured against (scripts/bench_slm.py, build "handwritten").
 *
 * No allocation and no file system: the weights are constant arrays (llama2.c's checkpoint layout,
 * linear layers [out][in]) and the activations and the KV cache buffers the caller provides.
 */
#ifndef HW_LLAMA_H
#define HW_LLAMA_H

#include <stdint.h>

typedef struct hw_config {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
} hw_config_t;

/* Per-layer arrays are stacked over the layers; rope_cos / rope_sin are [seq_len][head_dim / 2]. */
typedef struct hw_weights {
  const float *token_embedding; /* [vocab][dim] */
  const float *rms_att, *rms_ffn; /* [layers][dim] */
  const float *wq, *wo;           /* [layers][dim][dim] */
  const float *wk, *wv;           /* [layers][kv_dim][dim] */
  const float *w1, *w3;           /* [layers][hidden][dim] */
  const float *w2;                /* [layers][dim][hidden] */
  const float *rms_final;         /* [dim] */
  const float *rope_cos, *rope_sin;
  const float *wcls; /* [vocab][dim] */
} hw_weights_t;

/* Scratch of one forward pass, and the KV cache ([layers][seq_len][kv_dim] each), kept across calls. */
typedef struct hw_buffers {
  float *x, *xb, *xb2; /* [dim] */
  float *q;            /* [dim] */
  float *hb, *hb2;     /* [hidden] */
  float *att;          /* [seq_len] */
  float *logits;       /* [vocab] */
  float *key_cache, *value_cache;
} hw_buffers_t;

/* Run `token` at position `pos` (0 <= pos < seq_len), writing its key and value into the cache; the
   logits of the next token. Positions must come in order: 0, 1, ... */
const float *hw_forward(const hw_config_t *c, const hw_weights_t *w, hw_buffers_t *s, int32_t token, int32_t pos);

/* The first index of the largest logit (as np.argmax). */
int32_t hw_argmax(const float *logits, int32_t n);

#endif /* HW_LLAMA_H */
