/* dpl_attention_tiled: fused attention cut into L1 tiles, double-buffered over the cluster DMA and
   shared among the cluster's cores, see dpl_kernels.h (the schedule) and tvm_deeploy/offload/reference.py
   (attention_f32, and attention_s8, which DPL_S8 matches bit for bit).

   One fork runs the whole call: core 0 drives the DMA, every core computes its share of each step,
   two barriers per step keep them in step:
     all:    with a mask, its share of the keys: where the first row tile's visible keys end | barrier
     core 0: start step s+1's new blocks, wait for step s's        | barrier
     all:    step s for (head, row) pairs core, core + cores, ...  | barrier (not after the last step)
     core 0: send a finished row tile out, fetch single-buffered blocks, move to step s+1
   The last row tile goes out after the join (a decode step is one step: one barrier, or two with a mask).
   An fp32 attention over an int8 K and/or V (an int8 KV cache) fetches their blocks as int8 bytes and, at
   a step whose block is new, the cores first dequantize it together into a float32 buffer (one more
   barrier), exactly as TVM's dequantize computes it, so the result is that over the dequantized tensor.
   A block goes into the slot of its operand's ring that the block in use does not occupy, so a
   prefetch never lands on data a step still reads; the slot's previous block belonged to an earlier
   step, whose transfer was waited before that step ran. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "dpl_kernels.h"

/* The row kernel for a small head dimension is inlined with the dimension a constant, its loops over
   the features unrolled, so that the query row and the accumulator stay in registers. */
#if defined(__GNUC__)
#define AT_INLINE static inline __attribute__((always_inline))
#define AT_UNROLL _Pragma("GCC unroll 16")
#define AT_UNROLL_4 _Pragma("GCC unroll 4")
#else
#define AT_INLINE static inline
#define AT_UNROLL
#define AT_UNROLL_4
#endif
#define AT_REGISTER_DIM_MAX 16

/* Element strides of a block in L1: what the compute reads. */
typedef struct at_view {
  int32_t head, seq, feat;
} at_view_t;

/* One step: one key block of one pass of one row tile (tile_h heads x tile_q query rows). */
typedef struct at_step {
  int32_t b, hb, qi;         /* the row tile: batch, head block, query block */
  int32_t tile;              /* running row-tile number: its O slot is tile & 1 */
  int32_t h0, nh, kv_lo, span, q0, nq;
  int32_t kv_end;            /* keys fetched: all, or with a mask up to the last one the head block sees */
  int32_t blocks, passes;    /* key blocks the row tile visits; passes over them (1 or 2) */
  int32_t pass, ki, k0, nk;  /* ki < 0: the row tile sees no key (one step, no K/V) */
  int32_t first, last;       /* first / last step of the row tile */
} at_step_t;

/* An int8 K or V dequantized in L1: the float32 buffer's block, and what a step converts into it. */
typedef struct at_dequant {
  int32_t held[3];           /* (batch, head block, key block) the buffer holds; batch -1: none */
  const int8_t *src;         /* the current step's int8 block, or NULL: the buffer holds it already */
  int32_t count;             /* its elements */
} at_dequant_t;

/* The two L1 slots of a streamed operand and the block each holds. */
typedef struct at_ring {
  int32_t single;            /* both slots at one offset: fetch after the step that used it */
  int32_t slot, next;        /* slot of the current step's block, of the next step's */
  int32_t held[3];           /* (batch, head block, key block) of the newest block; batch -1: none */
  at_view_t view[2];
  dpl_dma_job_t job[2];
} at_ring_t;

typedef struct at_ctx {
  const dpl_attention_plan_t *p;
  uint8_t *l1;
  const uint8_t *q, *k, *v, *mask; /* mask NULL: none, or one whose visible keys all add 0 */
  uint8_t *o;
  int32_t mask_row;          /* the mask is one row, broadcast over batch, heads and query rows */
  int32_t row_end;           /* such a mask's end of visible keys (every row tile's), or -1 */
  uint32_t elem;             /* bytes of a Q and O element (and of K, V unless int8, see dk, dv) */
  at_step_t step, next;      /* the step computing now and the one after it */
  int32_t has_next;
  at_ring_t rq, rk, rv, rm;
  at_view_t o_view[2];
  dpl_dma_job_t jo[2], jlut;
  /* the current step's blocks, for the compute */
  const uint8_t *q_blk, *k_blk, *v_blk, *m_blk;
  uint8_t *o_blk;
  at_view_t qv, kv, vv, mv, ov;
  uint32_t k_elem, v_elem;   /* bytes of a K, V element as fetched */
  at_dequant_t dk, dv;       /* int8 K, V dequantized in L1 */
} at_ctx_t;

static int32_t at_min(int32_t a, int32_t b) { return a < b ? a : b; }

static int32_t at_ceil_div(int32_t a, int32_t b) { return (a + b - 1) / b; }

/* How many keys query i sees. */
static int32_t at_visible(const dpl_attention_plan_t *p, int32_t i) {
  int32_t n = p->kv_len;
  if (p->causal == DPL_CAUSAL_TOP_LEFT) {
    n = i + 1;
  } else if (p->causal == DPL_CAUSAL_BOTTOM_RIGHT) {
    n = i + 1 + p->kv_len - p->q_len;
  }
  if (n < 0) n = 0;
  return n < p->kv_len ? n : p->kv_len;
}

static int32_t at_kv_head(const dpl_attention_plan_t *p, int32_t h) { return (h / p->kv_div) % p->kv_heads; }

/* The element (b, h, r, f) of a strided operand of e-byte elements. */
static const uint8_t *at_at(const uint8_t *base, const dpl_strides_t *s, int32_t b, int32_t h, int32_t r, int32_t f,
                            uint32_t e) {
  return base + ((uint32_t)b * (uint32_t)s->batch + (uint32_t)h * (uint32_t)s->head + (uint32_t)r * (uint32_t)s->seq +
                 (uint32_t)f * (uint32_t)s->feat) * e;
}

/* -inf, the only float below -FLT_MAX, has one bit pattern: a key the mask hides is exactly these bits. */
#define AT_HIDDEN_BITS 0xff800000u

static int32_t at_hidden(const float *m) {
  const float f = *m; /* loaded as a float: memcpy from m itself would not know its alignment */
  uint32_t bits;
  memcpy(&bits, &f, 4);
  return bits == AT_HIDDEN_BITS;
}

/* +0 or -0: adding it leaves a score's value (a -0 score becomes +0, the same weight) */
static int32_t at_zero(const float *m) {
  const float f = *m;
  uint32_t bits;
  memcpy(&bits, &f, 4);
  return (bits & 0x7fffffffu) == 0;
}

/* One past the last key in [lo, hi) that a mask row (elements `stride` apart) does not hide, or lo. */
static int32_t at_last_visible(const float *row, int32_t stride, int32_t lo, int32_t hi) {
  if (stride == 0) return hi > lo && !at_hidden(row) ? hi : lo;
  if (stride == 1) {
    /* a decode step's mask hides the whole cache after its position: eight keys a test */
    for (; hi - lo >= 8; hi -= 8) {
      const float *m = row + hi - 8;
      if (!(at_hidden(m + 7) && at_hidden(m + 6) && at_hidden(m + 5) && at_hidden(m + 4) && at_hidden(m + 3) &&
            at_hidden(m + 2) && at_hidden(m + 1) && at_hidden(m))) {
        break;
      }
    }
  }
  while (hi > lo && at_hidden(row + (hi - 1) * stride)) --hi;
  return hi;
}

/* The first key in [lo, hi) of a mask row (elements `stride` apart) that is not +-0, or hi. */
static int32_t at_first_nonzero(const float *row, int32_t stride, int32_t lo, int32_t hi) {
  if (stride == 0) return lo < hi && at_zero(row) ? hi : lo;
  if (stride == 1) {
    for (; hi - lo >= 8; lo += 8) {
      const float *m = row + lo;
      if (!(at_zero(m) && at_zero(m + 1) && at_zero(m + 2) && at_zero(m + 3) && at_zero(m + 4) && at_zero(m + 5) &&
            at_zero(m + 6) && at_zero(m + 7))) {
        break;
      }
    }
  }
  while (lo < hi && at_zero(row + lo * stride)) ++lo;
  return lo;
}

/* One past the last key in [lo, hi) that some query row of heads h0 .. h0 + nh - 1 sees through the
   additive mask (not -inf), or lo: the keys after it add nothing to any row of the head block, so they
   are neither fetched nor scored. A decode step's mask hides the cache beyond its position this way.
   One bound for the whole head block keeps its K/V blocks the same for every row tile (resident across
   them). Reads the mask where it lives (L2), its broadcast axes once. */
static int32_t at_mask_end(const dpl_attention_plan_t *p, const uint8_t *mask, int32_t b, int32_t h0, int32_t nh,
                           int32_t lo, int32_t hi) {
  const int32_t heads = p->mask.head ? nh : 1, rows = p->mask.seq ? p->q_len : 1;
  int32_t hh, r, seen = lo;
  for (hh = 0; hh < heads; ++hh) {
    for (r = 0; r < rows && seen < hi; ++r) {
      const float *row = (const float *)(const void *)at_at(mask, &p->mask, b, h0 + hh, r, 0, 4);
      seen = at_last_visible(row, p->mask.feat, seen, hi);
    }
  }
  return seen;
}

/* ------------------------------------------------------------------------------------------ */
/* the schedule */

static void at_row_tile(const at_ctx_t *x, at_step_t *s) {
  const dpl_attention_plan_t *p = x->p;
  int32_t h, lo, hi;
  s->h0 = s->hb * p->tile_h;
  s->nh = at_min(p->tile_h, p->heads - s->h0);
  lo = hi = at_kv_head(p, s->h0);
  for (h = s->h0 + 1; h < s->h0 + s->nh; ++h) {
    const int32_t kh = at_kv_head(p, h);
    if (kh < lo) lo = kh;
    if (kh > hi) hi = kh;
  }
  s->kv_lo = lo;
  s->span = hi - lo + 1;
  s->q0 = s->qi * p->tile_q;
  s->nq = at_min(p->tile_q, p->q_len - s->q0);
  /* the last row sees the most keys */
  s->blocks = at_ceil_div(at_visible(p, s->q0 + s->nq - 1), p->tile_kv);
  /* without a mask, blocks stay whole (the tiler's DMA model); with one, they end where it does (the
     first row tile's end comes from at_first, and a mask of one row has one end for all) */
  if (s->qi == 0 && s->tile > 0) {
    if (x->row_end >= 0) {
      s->kv_end = x->row_end;
    } else {
      s->kv_end = x->mask ? at_mask_end(p, x->mask, s->b, s->h0, s->nh, 0, p->kv_len) : p->kv_len;
    }
  }
  s->blocks = at_min(s->blocks, at_ceil_div(s->kv_end, p->tile_kv));
  s->passes = (p->dtype == DPL_S8 && s->blocks > 1) ? 2 : 1;
  s->pass = 0;
  s->ki = s->blocks > 0 ? 0 : -1;
}

static void at_block(const dpl_attention_plan_t *p, at_step_t *s) {
  s->k0 = s->ki > 0 ? s->ki * p->tile_kv : 0;
  s->nk = s->ki >= 0 ? at_min(p->tile_kv, s->kv_end - s->k0) : 0;
  s->first = s->pass == 0 && s->ki <= 0;
  s->last = s->pass == s->passes - 1 && (s->ki < 0 || s->ki == s->blocks - 1);
}

/* The first step; kv_end: where the first row tile's visible keys end. */
static void at_first(const at_ctx_t *x, int32_t kv_end, at_step_t *s) {
  s->b = s->hb = s->qi = s->tile = 0;
  s->kv_end = kv_end;
  at_row_tile(x, s);
  at_block(x->p, s);
}

/* Advance to the next step; 0 when s was the last. */
static int32_t at_next(const at_ctx_t *x, at_step_t *s) {
  const dpl_attention_plan_t *p = x->p;
  if (s->ki >= 0 && s->ki + 1 < s->blocks) {
    ++s->ki;
  } else if (s->pass + 1 < s->passes) {
    ++s->pass;
    s->ki = 0;
  } else {
    if (++s->qi == at_ceil_div(p->q_len, p->tile_q)) {
      s->qi = 0;
      if (++s->hb == at_ceil_div(p->heads, p->tile_h)) {
        s->hb = 0;
        if (++s->b == p->batch) return 0;
      }
    }
    ++s->tile;
    at_row_tile(x, s);
  }
  at_block(p, s);
  return 1;
}

static int32_t at_needs_kv(const at_step_t *s) { return s->ki >= 0; }

static int32_t at_needs_v(const at_step_t *s) { return s->ki >= 0 && s->pass == s->passes - 1; }

/* ------------------------------------------------------------------------------------------ */
/* DMA */

static void at_transfer(dpl_dma_job_t *job, uint8_t *l1, const uint8_t *l2, uint32_t row_bytes, int32_t rows,
                        uint32_t l1_stride, uint32_t l2_stride, int32_t to_l1) {
  dpl_dma_wait(job); /* a block of several transfers: one at a time on the block's job */
  if (to_l1) {
    dpl_dma_start_2d(job, l1, l2, row_bytes, (uint32_t)rows, l1_stride, l2_stride, DPL_DMA_TO_L1);
  } else {
    dpl_dma_start_2d(job, (void *)(uintptr_t)l2, l1, row_bytes, (uint32_t)rows, l2_stride, l1_stride,
                     DPL_DMA_TO_L2);
  }
}

/* Move a block of nh heads x nr rows x nf features between L2 (element strides s, elements of e
   bytes, first element at l2) and a packed L1 buffer, in the fewest transfers the strides allow;
   `go` 0 only computes the L1 layout. Returns the L1 view. */
static at_view_t at_move(dpl_dma_job_t *job, uint8_t *l1, const uint8_t *l2, const dpl_strides_t *s, int32_t nh,
                         int32_t nr, int32_t nf, uint32_t e, int32_t to_l1, int32_t go) {
  at_view_t view;
  const int32_t feat_contiguous = nf == 1 || s->feat == 1;
  const uint32_t row = (uint32_t)nf * e;
  int32_t hh, r;
  view.head = nr * nf;
  view.seq = nf;
  view.feat = 1;
  if (feat_contiguous && (nr == 1 || s->seq == nf)) {
    /* each head's rows are one contiguous run: one transfer of nh runs */
    if (go) at_transfer(job, l1, l2, (uint32_t)nr * row, nh, (uint32_t)nr * row, (uint32_t)s->head * e, to_l1);
  } else if (feat_contiguous && (nh == 1 || s->head == nf)) {
    /* the heads sit side by side in every row: one transfer of nr rows, L1 rows hold every head */
    view.head = nf;
    view.seq = nh * nf;
    if (go) at_transfer(job, l1, l2, (uint32_t)nh * row, nr, (uint32_t)nh * row, (uint32_t)s->seq * e, to_l1);
  } else if (feat_contiguous) {
    for (hh = 0; go && hh < nh; ++hh) {
      at_transfer(job, l1 + (uint32_t)(hh * nr) * row, l2 + (uint32_t)hh * (uint32_t)s->head * e, row, nr, row,
                  (uint32_t)s->seq * e, to_l1);
    }
  } else if (nr == 1 || s->seq == 1) {
    /* strided features, contiguous rows: each head's block feature-major */
    view.seq = 1;
    view.feat = nr;
    for (hh = 0; go && hh < nh; ++hh) {
      at_transfer(job, l1 + (uint32_t)(hh * nr) * row, l2 + (uint32_t)hh * (uint32_t)s->head * e,
                  (uint32_t)nr * e, nf, (uint32_t)nr * e, (uint32_t)s->feat * e, to_l1);
    }
  } else {
    for (hh = 0; go && hh < nh; ++hh) {
      for (r = 0; r < nr; ++r) {
        at_transfer(job, l1 + (uint32_t)(hh * nr + r) * row,
                    l2 + ((uint32_t)hh * (uint32_t)s->head + (uint32_t)r * (uint32_t)s->seq) * e, e, nf, e,
                    (uint32_t)s->feat * e, to_l1);
      }
    }
  }
  return view;
}

static void at_fetch_q(at_ctx_t *x, const at_step_t *s, int32_t slot) {
  const dpl_attention_plan_t *p = x->p;
  x->rq.view[slot] = at_move(&x->rq.job[slot], x->l1 + p->l1_q[slot], at_at(x->q, &p->q, s->b, s->h0, s->q0, 0, x->elem),
                             &p->q, s->nh, s->nq, p->qk_dim, x->elem, 1, 1);
}

static void at_fetch_kv(at_ctx_t *x, at_ring_t *ring, const at_step_t *s, int32_t slot, int32_t is_v) {
  const dpl_attention_plan_t *p = x->p;
  const dpl_strides_t *st = is_v ? &p->v : &p->k;
  const uint32_t off = is_v ? p->l1_v[slot] : p->l1_k[slot], e = is_v ? x->v_elem : x->k_elem;
  ring->view[slot] = at_move(&ring->job[slot], x->l1 + off, at_at(is_v ? x->v : x->k, st, s->b, s->kv_lo, s->k0, 0, e),
                             st, s->span, s->nk, is_v ? p->v_dim : p->qk_dim, e, 1, 1);
  ring->held[0] = s->b;
  ring->held[1] = s->hb;
  ring->held[2] = s->ki;
}

/* the mask block: axes the mask broadcasts (stride 0) are fetched once and read with stride 0 */
static void at_fetch_mask(at_ctx_t *x, const at_step_t *s, int32_t slot) {
  const dpl_attention_plan_t *p = x->p;
  const dpl_strides_t *st = &p->mask;
  at_view_t view = at_move(&x->rm.job[slot], x->l1 + p->l1_mask[slot], at_at(x->mask, st, s->b, s->h0, s->q0, s->k0, 4),
                           st, st->head ? s->nh : 1, st->seq ? s->nq : 1, st->feat ? s->nk : 1, 4, 1, 1);
  if (!st->head) view.head = 0;
  if (!st->seq) view.seq = 0;
  if (!st->feat) view.feat = 0;
  x->rm.view[slot] = view;
}

static int32_t at_holds(const at_ring_t *ring, const at_step_t *s) {
  return ring->held[0] == s->b && ring->held[1] == s->hb && ring->held[2] == s->ki;
}

/* Fetch the K or V block step s needs, when new, into the ring's free slot (`after`: this is the
   fetch of a single-buffered ring, after the step that used its only slot). */
static void at_fetch_if_new(at_ctx_t *x, at_ring_t *ring, const at_step_t *s, int32_t is_v, int32_t after) {
  if (ring->single != after || !(is_v ? at_needs_v(s) : at_needs_kv(s)) || at_holds(ring, s)) return;
  ring->next = ring->single ? 0 : 1 - ring->slot;
  at_fetch_kv(x, ring, s, ring->next, is_v);
}

static void at_fetch_mask_for(at_ctx_t *x, const at_step_t *s, int32_t after) {
  at_ring_t *ring = &x->rm;
  if (!x->mask || ring->single != after || !at_needs_kv(s)) return;
  ring->next = ring->single ? 0 : 1 - ring->slot;
  at_fetch_mask(x, s, ring->next);
}

/* Core 0, for a step reading an int8 K or V block (`fetched`, dim features): the float32 buffer the compute
   reads instead, and, when the buffer holds another block, what the cores convert into it (same layout). */
static const uint8_t *at_dequant_block(at_ctx_t *x, at_dequant_t *d, const uint8_t *fetched, int32_t dim,
                                       uint32_t l1_f32) {
  const at_step_t *s = &x->step;
  if (d->held[0] != s->b || d->held[1] != s->hb || d->held[2] != s->ki) {
    d->held[0] = s->b;
    d->held[1] = s->hb;
    d->held[2] = s->ki;
    d->src = (const int8_t *)(const void *)fetched;
    d->count = s->span * s->nk * dim;
  }
  return x->l1 + l1_f32;
}

/* Core 0, before step s computes: start step s+1's new blocks in double-buffered slots, then wait
   for step s's blocks and point the compute at them. */
static void at_before(at_ctx_t *x) {
  const dpl_attention_plan_t *p = x->p;
  const at_step_t *s = &x->step;
  const int32_t o_slot = s->tile & 1;
  x->rq.next = x->rq.slot;
  x->rk.next = x->rk.slot;
  x->rv.next = x->rv.slot;
  x->rm.next = x->rm.slot;
  if (x->has_next) {
    const at_step_t *n = &x->next;
    if (n->first) {
      x->rq.next = 1 - x->rq.slot;
      at_fetch_q(x, n, x->rq.next);
    }
    at_fetch_if_new(x, &x->rk, n, 0, 0);
    at_fetch_if_new(x, &x->rv, n, 1, 0);
    at_fetch_mask_for(x, n, 0);
  }
  if (s->first) {
    /* the row tile's O slot is free once the row tile two before has gone out */
    dpl_dma_wait(&x->jo[o_slot]);
    x->o_view[o_slot] = at_move(&x->jo[o_slot], x->l1 + p->l1_o[o_slot], x->o, &p->o, s->nh, s->nq, p->v_dim,
                                x->elem, 0, 0);
  }
  dpl_dma_wait(&x->rq.job[x->rq.slot]);
  x->q_blk = x->l1 + p->l1_q[x->rq.slot];
  x->qv = x->rq.view[x->rq.slot];
  x->k_blk = x->v_blk = x->m_blk = 0;
  x->dk.src = x->dv.src = 0;
  if (at_needs_kv(s)) {
    dpl_dma_wait(&x->rk.job[x->rk.slot]);
    x->k_blk = x->l1 + p->l1_k[x->rk.slot];
    x->kv = x->rk.view[x->rk.slot];
    if (p->k_dequant) x->k_blk = at_dequant_block(x, &x->dk, x->k_blk, p->qk_dim, p->l1_k_f32);
    if (x->mask) {
      dpl_dma_wait(&x->rm.job[x->rm.slot]);
      x->m_blk = x->l1 + p->l1_mask[x->rm.slot];
      x->mv = x->rm.view[x->rm.slot];
    }
  }
  if (at_needs_v(s)) {
    dpl_dma_wait(&x->rv.job[x->rv.slot]);
    x->v_blk = x->l1 + p->l1_v[x->rv.slot];
    x->vv = x->rv.view[x->rv.slot];
    if (p->v_dequant) x->v_blk = at_dequant_block(x, &x->dv, x->v_blk, p->v_dim, p->l1_v_f32);
  }
  x->o_blk = x->l1 + p->l1_o[o_slot];
  x->ov = x->o_view[o_slot];
}

/* Core 0, after step s computed: send a finished row tile out, fetch the next step's blocks of
   single-buffered operands, and move on. */
static void at_after(at_ctx_t *x) {
  const dpl_attention_plan_t *p = x->p;
  const at_step_t *s = &x->step;
  if (s->last) {
    const int32_t o_slot = s->tile & 1;
    at_move(&x->jo[o_slot], x->l1 + p->l1_o[o_slot], at_at(x->o, &p->o, s->b, s->h0, s->q0, 0, x->elem), &p->o, s->nh,
            s->nq, p->v_dim, x->elem, 0, 1);
  }
  if (!x->has_next) return;
  at_fetch_if_new(x, &x->rk, &x->next, 0, 1);
  at_fetch_if_new(x, &x->rv, &x->next, 1, 1);
  at_fetch_mask_for(x, &x->next, 1);
  x->rq.slot = x->rq.next;
  x->rk.slot = x->rk.next;
  x->rv.slot = x->rv.next;
  x->rm.slot = x->rm.next;
  x->step = x->next;
  x->has_next = at_next(x, &x->next);
}

/* ------------------------------------------------------------------------------------------ */
/* compute: one (head, row) pair of the current step */

static void at_row_f32(const at_ctx_t *x, int32_t hl, int32_t r, float *scores) {
  const dpl_attention_plan_t *p = x->p;
  const at_step_t *s = &x->step;
  const int32_t dv = p->v_dim, d = p->qk_dim, of = x->ov.feat;
  const int32_t qf = x->qv.feat, ks = x->kv.seq, kf = x->kv.feat, vs = x->vv.seq, vf = x->vv.feat;
  float *state = (float *)(void *)(x->l1 + p->l1_state) + 2 * (hl * p->tile_q + r); /* max, sum */
  float *acc = (float *)(void *)x->o_blk + hl * x->ov.head + r * x->ov.seq;       /* feature stride of */
  int32_t j, c, visible;
  if (s->first) {
    state[0] = -INFINITY;
    state[1] = 0.0f;
    for (c = 0; c < dv; ++c) acc[c * of] = 0.0f;
  }
  visible = at_min(at_visible(p, s->q0 + r) - s->k0, s->nk);
  if (visible > 0) {
    const float *qr = (const float *)(const void *)x->q_blk + hl * x->qv.head + r * x->qv.seq;
    const int32_t kh = at_kv_head(p, s->h0 + hl) - s->kv_lo;
    const float *kb = (const float *)(const void *)x->k_blk + kh * x->kv.head;
    const float *vb = (const float *)(const void *)x->v_blk + kh * x->vv.head;
    const float *mr = x->m_blk ? (const float *)(const void *)x->m_blk + hl * x->mv.head + r * x->mv.seq : 0;
    float block_max = 0.0f;
    for (j = 0; j < visible; ++j) {
      const float *kr = kb + j * ks;
      float dot = 0.0f;
      for (c = 0; c < d; ++c) dot += qr[c * qf] * kr[c * kf];
      dot = dot * p->scale;
      if (mr) dot += mr[j * x->mv.feat];
      scores[j] = dot;
      if (j == 0 || dot > block_max) block_max = dot; /* seeded from score 0 so that a NaN propagates */
    }
    if (!(block_max < -FLT_MAX)) { /* some visible score is above -inf */
      const float old_max = state[0];
      const float new_max = old_max > block_max ? old_max : block_max;
      const float rescale = old_max < -FLT_MAX ? 0.0f : dpl_expf(old_max - new_max);
      float sum = state[1] * rescale;
      if (rescale != 1.0f) {
        for (c = 0; c < dv; ++c) acc[c * of] *= rescale;
      }
      for (j = 0; j < visible; ++j) {
        const float e = dpl_expf(scores[j] - new_max);
        const float *vr = vb + j * vs;
        sum += e;
        for (c = 0; c < dv; ++c) acc[c * of] += e * vr[c * vf];
      }
      state[0] = new_max;
      state[1] = sum;
    }
  }
  if (s->last) {
    const float sum = state[1];
    /* divide (not multiply by 1/sum), like TVM's softmax; no visible key: 0 */
    for (c = 0; c < dv; ++c) acc[c * of] = sum == 0.0f ? 0.0f : acc[c * of] / sum;
  }
}

/* at_row_f32 where every block's features are contiguous in L1 and qk_dim == v_dim == dim, a constant
   once inlined (at most AT_REGISTER_DIM_MAX): the same operations in the same order, the query rows and
   the accumulator in registers. Two query heads of one K/V head can be scored together, each key row
   loaded once for both. */

/* One (head, row) pair of the current step. */
typedef struct at_row {
  float *state;         /* max, sum */
  float *out;           /* the running sums (the O block) */
  const float *q, *m;   /* the query row; its mask row or NULL */
  const float *k, *v;   /* its K/V head's block */
  int32_t visible;      /* keys of the block the row sees */
} at_row_t;

AT_INLINE at_row_t at_row(const at_ctx_t *x, int32_t hl, int32_t r) {
  const dpl_attention_plan_t *p = x->p;
  const at_step_t *s = &x->step;
  const int32_t kh = at_kv_head(p, s->h0 + hl) - s->kv_lo;
  at_row_t row;
  row.state = (float *)(void *)(x->l1 + p->l1_state) + 2 * (hl * p->tile_q + r);
  row.out = (float *)(void *)x->o_blk + hl * x->ov.head + r * x->ov.seq;
  row.q = (const float *)(const void *)x->q_blk + hl * x->qv.head + r * x->qv.seq;
  row.m = x->m_blk ? (const float *)(const void *)x->m_blk + hl * x->mv.head + r * x->mv.seq : 0;
  row.k = x->k_blk ? (const float *)(const void *)x->k_blk + kh * x->kv.head : 0; /* NULL: no key this step */
  row.v = x->v_blk ? (const float *)(const void *)x->v_blk + kh * x->vv.head : 0;
  row.visible = at_min(at_visible(p, s->q0 + r) - s->k0, s->nk);
  if (s->first) {
    row.state[0] = -INFINITY;
    row.state[1] = 0.0f;
  }
  return row;
}

/* The row's scores (q . k) * scale (+ mask) into scores[]; returns their maximum, seeded from score 0 so
   that a NaN propagates. Needs visible > 0. */
AT_INLINE float at_scores_dim(const at_ctx_t *x, const at_row_t *a, float *scores, const int32_t dim) {
  const int32_t ks = x->kv.seq, mf = x->mv.feat;
  const float scale = x->p->scale;
  const float *kr = a->k, *mr = a->m;
  float q[AT_REGISTER_DIM_MAX], block_max = 0.0f;
  int32_t j, c;
  AT_UNROLL
  for (c = 0; c < dim; ++c) q[c] = a->q[c];
  for (j = 0; j < a->visible; ++j, kr += ks) {
    float dot = 0.0f;
    AT_UNROLL
    for (c = 0; c < dim; ++c) dot += q[c] * kr[c];
    dot = dot * scale;
    if (mr) dot += mr[j * mf];
    scores[j] = dot;
    if (j == 0 || dot > block_max) block_max = dot;
  }
  return block_max;
}

/* at_scores_dim for two rows of one K/V head and one query row (so the same visible keys). */
AT_INLINE void at_scores2_dim(const at_ctx_t *x, const at_row_t *a, const at_row_t *b, float *sa, float *sb,
                              float *max_a, float *max_b, const int32_t dim) {
  const int32_t ks = x->kv.seq, mf = x->mv.feat;
  const float scale = x->p->scale;
  const float *kr = a->k, *ma = a->m, *mb = b->m;
  float qa[AT_REGISTER_DIM_MAX], qb[AT_REGISTER_DIM_MAX], top_a = 0.0f, top_b = 0.0f;
  int32_t j, c;
  AT_UNROLL
  for (c = 0; c < dim; ++c) {
    qa[c] = a->q[c];
    qb[c] = b->q[c];
  }
  for (j = 0; j < a->visible; ++j, kr += ks) {
    float dot_a = 0.0f, dot_b = 0.0f;
    AT_UNROLL
    for (c = 0; c < dim; ++c) {
      dot_a += qa[c] * kr[c];
      dot_b += qb[c] * kr[c];
    }
    dot_a = dot_a * scale;
    dot_b = dot_b * scale;
    if (ma) {
      dot_a += ma[j * mf];
      dot_b += mb[j * mf];
    }
    sa[j] = dot_a;
    sb[j] = dot_b;
    if (j == 0 || dot_a > top_a) top_a = dot_a;
    if (j == 0 || dot_b > top_b) top_b = dot_b;
  }
  *max_a = top_a;
  *max_b = top_b;
}

/* The online softmax over the row's scored keys (maximum block_max) and their weighted V rows, then,
   at the row tile's last step, the division by the sum. */
AT_INLINE void at_weigh_dim(const at_ctx_t *x, const at_row_t *a, const float *scores, float block_max,
                            const int32_t dim) {
  const at_step_t *s = &x->step;
  const int32_t vs = x->vv.seq;
  float *state = a->state, *out = a->out;
  float acc[AT_REGISTER_DIM_MAX];
  int32_t j, c;
  AT_UNROLL
  for (c = 0; c < dim; ++c) acc[c] = s->first ? 0.0f : out[c];
  if (a->visible > 0 && !(block_max < -FLT_MAX)) { /* some visible score is above -inf */
    const float *vr = a->v;
    const float old_max = state[0];
    const float new_max = old_max > block_max ? old_max : block_max;
    const float rescale = old_max < -FLT_MAX ? 0.0f : dpl_expf(old_max - new_max);
    float sum = state[1] * rescale;
    if (!s->first && rescale != 1.0f) { /* the first step's sums are 0 */
      AT_UNROLL
      for (c = 0; c < dim; ++c) acc[c] *= rescale;
    }
    for (j = 0; j < a->visible; ++j, vr += vs) {
      const float e = dpl_expf(scores[j] - new_max);
      sum += e;
      AT_UNROLL
      for (c = 0; c < dim; ++c) acc[c] += e * vr[c];
    }
    state[0] = new_max;
    state[1] = sum;
  }
  if (s->last) {
    const float sum = state[1];
    /* divide (not multiply by 1/sum), like TVM's softmax; no visible key: 0 */
    AT_UNROLL
    for (c = 0; c < dim; ++c) out[c] = sum == 0.0f ? 0.0f : acc[c] / sum;
  } else {
    AT_UNROLL
    for (c = 0; c < dim; ++c) out[c] = acc[c];
  }
}

/* This core's units of the current step, interleaved over the cores: (head, row) pairs, or with `pairs`
   two heads of one row, scored together when they read the same K/V head. scores: room for two blocks
   of keys when pairs. */
AT_INLINE void at_units_dim(const at_ctx_t *x, int32_t core, int32_t cores, int32_t pairs, float *scores,
                            const int32_t dim) {
  const dpl_attention_plan_t *p = x->p;
  const at_step_t *s = &x->step;
  const int32_t units = (pairs ? (s->nh + 1) / 2 : s->nh) * s->nq;
  int32_t i, hl;
  for (i = core; i < units; i += cores) {
    const int32_t r = i % s->nq, first = pairs ? 2 * (i / s->nq) : i / s->nq;
    const int32_t end = at_min(first + (pairs ? 2 : 1), s->nh);
    if (end - first == 2 && at_kv_head(p, s->h0 + first) == at_kv_head(p, s->h0 + first + 1)) {
      const at_row_t a = at_row(x, first, r), b = at_row(x, first + 1, r);
      float *scores_b = scores + p->tile_kv, max_a = 0.0f, max_b = 0.0f;
      if (a.visible > 0) at_scores2_dim(x, &a, &b, scores, scores_b, &max_a, &max_b, dim);
      at_weigh_dim(x, &a, scores, max_a, dim);
      at_weigh_dim(x, &b, scores_b, max_b, dim);
      continue;
    }
    for (hl = first; hl < end; ++hl) {
      const at_row_t a = at_row(x, hl, r);
      const float block_max = a.visible > 0 ? at_scores_dim(x, &a, scores, dim) : 0.0f;
      at_weigh_dim(x, &a, scores, block_max, dim);
    }
  }
}

/* The head dimension at_units_dim runs the current step with, or 0: at_row_f32. */
static int32_t at_register_dim(const at_ctx_t *x) {
  const int32_t d = x->p->qk_dim;
  const int32_t contiguous = x->qv.feat == 1 && x->ov.feat == 1 && (!x->k_blk || x->kv.feat == 1) &&
                             (!x->v_blk || x->vv.feat == 1);
  return contiguous && d == x->p->v_dim && (d == 4 || d == 8 || d == 16) ? d : 0;
}

/* at_units_dim with its dimension a constant. */
static void at_units(const at_ctx_t *x, int32_t core, int32_t cores, int32_t pairs, float *scores, int32_t dim) {
  if (dim == 4) {
    at_units_dim(x, core, cores, pairs, scores, 4);
  } else if (dim == 8) {
    at_units_dim(x, core, cores, pairs, scores, 8);
  } else {
    at_units_dim(x, core, cores, pairs, scores, 16);
  }
}

/* e = 2^(DPL_EXP_LUT_BITS - e_shift) * exp(-(real distance from the row maximum)), see reference.exp2_weights */
static int32_t at_exp2(const dpl_attention_plan_t *p, const uint16_t *lut, int32_t delta) {
  const int64_t t = ((int64_t)delta * p->exp_mul + ((int64_t)1 << (p->exp_shift - 1))) >> p->exp_shift;
  const int64_t n = (t >> DPL_EXP_FRAC_BITS) + p->e_shift;
  if (n >= DPL_EXP_ZERO_SHIFT) return 0;
  return ((int32_t)lut[t & ((1 << DPL_EXP_FRAC_BITS) - 1)] + (((int32_t)1 << (int32_t)n) >> 1)) >> (int32_t)n;
}

static void at_row_s8(const at_ctx_t *x, int32_t hl, int32_t r, int32_t *scores) {
  const dpl_attention_plan_t *p = x->p;
  const at_step_t *s = &x->step;
  /* locals: the int32 stores below could alias the context's int32 fields otherwise */
  const int32_t dv = p->v_dim, d = p->qk_dim, q_zp = p->q_zp, k_zp = p->k_zp, v_zp = p->v_zp;
  const int32_t qf = x->qv.feat, ks = x->kv.seq, kf = x->kv.feat, vs = x->vv.seq, vf = x->vv.feat;
  int32_t *state = (int32_t *)(void *)(x->l1 + p->l1_state) + (2 + dv) * (hl * p->tile_q + r); /* max, sum, acc */
  int32_t *acc = state + 2;
  int32_t j, c, visible;
  if (s->first) {
    state[0] = INT32_MIN;
    state[1] = 0;
    for (c = 0; c < dv; ++c) acc[c] = 0;
  }
  visible = at_min(at_visible(p, s->q0 + r) - s->k0, s->nk);
  if (visible > 0) {
    const int8_t *qr = (const int8_t *)x->q_blk + hl * x->qv.head + r * x->qv.seq;
    const int32_t kh = at_kv_head(p, s->h0 + hl) - s->kv_lo;
    const int8_t *kb = (const int8_t *)x->k_blk + kh * x->kv.head;
    int32_t block_max = INT32_MIN;
    for (j = 0; j < visible; ++j) {
      const int8_t *kr = kb + j * ks;
      int32_t dot = 0;
      for (c = 0; c < d; ++c) dot += ((int32_t)qr[c * qf] - q_zp) * ((int32_t)kr[c * kf] - k_zp);
      scores[j] = dot;
      if (dot > block_max) block_max = dot;
    }
    if (s->passes == 2 && s->pass == 0) {
      if (block_max > state[0]) state[0] = block_max; /* first pass: the row's exact maximum */
    } else {
      /* one block: its maximum is the row's; two passes: the first found it */
      const int32_t row_max = s->passes == 1 ? block_max : state[0];
      const uint16_t *lut = (const uint16_t *)(const void *)(x->l1 + p->l1_lut);
      const int8_t *vb = (const int8_t *)x->v_blk + kh * x->vv.head;
      int32_t sum = state[1];
      for (j = 0; j < visible; ++j) {
        const int32_t e = at_exp2(p, lut, row_max - scores[j]);
        const int8_t *vr = vb + j * vs;
        if (e == 0) continue;
        sum += e;
        for (c = 0; c < dv; ++c) acc[c] += e * ((int32_t)vr[c * vf] - v_zp);
      }
      state[1] = sum;
    }
  }
  if (s->last) {
    int8_t *out = (int8_t *)x->o_blk + hl * x->ov.head + r * x->ov.seq;
    const int32_t of = x->ov.feat, sum = state[1];
    const int32_t shift = p->out_shift + DPL_ATTENTION_MEAN_BITS;
    /* 2^RECIP / sum: the weighted mean of v - v_zp with MEAN fractional bits is (acc * inv) >> (RECIP - MEAN) */
    const int64_t inv = sum > 0 ? (int64_t)(((uint64_t)1 << DPL_ATTENTION_RECIP_BITS) / (uint64_t)sum) : 0;
    for (c = 0; c < dv; ++c) {
      int64_t y = p->out_zp;
      if (sum > 0) {
        /* arithmetic shift (gcc guarantees it) */
        const int64_t w = ((int64_t)acc[c] * inv) >> (DPL_ATTENTION_RECIP_BITS - DPL_ATTENTION_MEAN_BITS);
        y += (w * p->out_mul + ((int64_t)1 << (shift - 1))) >> shift;
      }
      if (y < p->lo) y = p->lo;
      if (y > p->hi) y = p->hi;
      out[c * of] = (int8_t)y;
    }
  }
}

/* Float scores per core in l1_scores: two query heads of a K/V head are scored together when
   kv_div >= 2 (tvm_deeploy/plan/tiling/attention.py sizes the buffer alike). */
static int32_t at_score_rows(const dpl_attention_plan_t *p) { return p->dtype == DPL_F32 && p->kv_div >= 2 ? 2 : 1; }

static void at_compute(const at_ctx_t *x, int32_t core) {
  const dpl_attention_plan_t *p = x->p;
  const at_step_t *s = &x->step;
  const int32_t cores = p->cores > 1 ? p->cores : 1;
  uint8_t *scores = x->l1 + p->l1_scores + (uint32_t)(core * at_score_rows(p)) * (uint32_t)p->tile_kv * 4u;
  const int32_t dim = p->dtype == DPL_F32 ? at_register_dim(x) : 0;
  int32_t i;
  if (dim) {
    /* pairs of query heads only with at least two units of work per core: they halve the units */
    at_units(x, core, cores, at_score_rows(p) == 2 && s->nh * s->nq >= 2 * cores, (float *)(void *)scores, dim);
    return;
  }
  /* interleaved, so that causal rows (later rows see more keys) spread over the cores */
  for (i = core; i < s->nh * s->nq; i += cores) {
    if (p->dtype == DPL_F32) {
      at_row_f32(x, i / s->nq, i % s->nq, (float *)(void *)scores);
    } else {
      at_row_s8(x, i / s->nq, i % s->nq, (int32_t *)(void *)scores);
    }
  }
}

/* Core 0, at the start of the fork: the first step and its blocks (kv_end: where the first row tile's
   visible keys end). */
static void at_start(at_ctx_t *x, int32_t kv_end) {
  at_first(x, kv_end, &x->step);
  x->next = x->step;
  x->has_next = at_next(x, &x->next);
  at_fetch_q(x, &x->step, 0);
  if (at_needs_kv(&x->step)) {
    at_fetch_kv(x, &x->rk, &x->step, 0, 0);
    if (x->mask) at_fetch_mask(x, &x->step, 0);
  }
  if (at_needs_v(&x->step)) at_fetch_kv(x, &x->rv, &x->step, 0, 1);
}

/* Bytes 4-byte words apart of the cores' slots in l1_scores (at least 2, for at_find_end). */
static int32_t at_core_words(const dpl_attention_plan_t *p) {
  const int32_t words = at_score_rows(p) * p->tile_kv;
  return words > 2 ? words : 2;
}

/* All cores, with a mask: where the first row tile's visible keys end, each core scanning its share of
   the keys (the shares' ends and first non-zero keys meet in the cores' score slots). A mask of one row
   that is +-0 up to that end adds nothing: core 0 drops it (no mask blocks, no additions). */
static int32_t at_find_end(at_ctx_t *x, int32_t core) {
  const dpl_attention_plan_t *p = x->p;
  int32_t *found = (int32_t *)(void *)(x->l1 + p->l1_scores);
  const int32_t words = at_core_words(p), cores = dpl_core_count();
  int32_t lo, hi, end, c, nonzero;
  dpl_core_share(p->kv_len, &lo, &hi);
  end = at_mask_end(p, x->mask, 0, 0, at_min(p->tile_h, p->heads), lo, hi);
  found[core * words] = end > lo ? end : 0; /* lo: no key of the share visible */
  nonzero = x->mask_row ? at_first_nonzero((const float *)(const void *)x->mask, p->mask.feat, lo, hi) : lo;
  found[core * words + 1] = nonzero < hi ? nonzero : p->kv_len; /* hi: the share is +-0 throughout */
  dpl_barrier();
  end = 0;
  nonzero = p->kv_len;
  for (c = 0; c < cores; ++c) {
    end = found[c * words] > end ? found[c * words] : end;
    nonzero = found[c * words + 1] < nonzero ? found[c * words + 1] : nonzero;
  }
  if (core == 0 && x->mask_row) {
    x->row_end = end;
    if (nonzero >= end) x->mask = 0;
  }
  return end;
}

/* All cores: this core's share of a new int8 block into the float32 buffer, as TVM's dequantize computes
   it: float32(int32(x) - zp) * scale, one rounding. */
static void at_dequantize(const at_dequant_t *d, uint8_t *buffer, int32_t zp, float scale) {
  float *out = (float *)(void *)buffer;
  int32_t i, lo, hi;
  if (!d->src) return;
  dpl_core_share(d->count, &lo, &hi);
  AT_UNROLL_4
  for (i = lo; i < hi; ++i) out[i] = (float)((int32_t)d->src[i] - zp) * scale;
}

static void at_worker(void *arg) {
  at_ctx_t *x = (at_ctx_t *)arg;
  const int32_t core = dpl_core_id();
  const int32_t kv_end = x->mask ? at_find_end(x, core) : x->p->kv_len;
  int32_t last;
  if (core == 0) {
    at_start(x, kv_end);
    at_before(x);
  }
  dpl_barrier();
  for (;;) {
    last = !x->has_next; /* core 0 changes it only after the barrier below */
    if (x->dk.src || x->dv.src) {
      at_dequantize(&x->dk, x->l1 + x->p->l1_k_f32, x->p->k_dq_zp, x->p->k_dq_scale);
      at_dequantize(&x->dv, x->l1 + x->p->l1_v_f32, x->p->v_dq_zp, x->p->v_dq_scale);
      dpl_barrier();
    }
    at_compute(x, core);
    if (last) break;
    dpl_barrier();
    if (core == 0) {
      at_after(x);
      at_before(x);
    }
    dpl_barrier();
  }
}

/* A ring with nothing held or pending (its views and transfers are written before they are read). */
static void at_ring_init(at_ring_t *ring, const uint32_t off[2]) {
  ring->single = off[0] == off[1];
  ring->slot = ring->next = 0;
  ring->held[0] = -1;
  ring->job[0].pending = ring->job[1].pending = 0;
}

void dpl_attention_tiled(const dpl_attention_plan_t *plan, uint8_t *l1, const void *q, const void *k,
                         const void *v, const float *mask, void *o, const uint16_t *exp2_lut) {
  const dpl_attention_plan_t *p = plan;
  at_ctx_t x;
  int32_t i;
  if (p->batch <= 0 || p->heads <= 0 || p->q_len <= 0 || p->v_dim <= 0 || p->kv_len < 0 || p->tile_h <= 0 ||
      p->tile_q <= 0 || p->tile_kv <= 0 || p->kv_heads <= 0 || p->kv_div <= 0) {
    return;
  }
  x.p = p;
  x.l1 = l1;
  x.q = (const uint8_t *)q;
  x.k = (const uint8_t *)k;
  x.v = (const uint8_t *)v;
  x.mask = p->dtype == DPL_F32 ? (const uint8_t *)(const void *)mask : 0;
  x.mask_row = (!p->mask.batch || p->batch == 1) && (!p->mask.head || p->heads == 1) &&
               (!p->mask.seq || p->q_len == 1);
  x.row_end = -1;
  x.o = (uint8_t *)o;
  x.elem = p->dtype == DPL_F32 ? 4u : 1u;
  x.k_elem = p->k_dequant ? 1u : x.elem;
  x.v_elem = p->v_dequant ? 1u : x.elem;
  x.dk.held[0] = x.dv.held[0] = -1;
  x.dk.src = x.dv.src = 0;
  at_ring_init(&x.rq, p->l1_q);
  at_ring_init(&x.rk, p->l1_k);
  at_ring_init(&x.rv, p->l1_v);
  at_ring_init(&x.rm, p->l1_mask);
  x.rq.single = 0; /* Q always has two slots */
  x.jo[0].pending = x.jo[1].pending = x.jlut.pending = 0;

  /* int8: the exp2 table */
  if (p->dtype == DPL_S8) dpl_dma_start_1d(&x.jlut, l1 + p->l1_lut, exp2_lut, DPL_EXP2_LUT_BYTES, DPL_DMA_TO_L1);
  dpl_dma_wait(&x.jlut);

  dpl_cluster_fork(p->cores > 1 ? p->cores : 1, at_worker, &x);
  at_after(&x); /* the last row tile goes out */

  for (i = 0; i < 2; ++i) {
    dpl_dma_wait(&x.rq.job[i]);
    dpl_dma_wait(&x.rk.job[i]);
    dpl_dma_wait(&x.rv.job[i]);
    dpl_dma_wait(&x.rm.job[i]);
    dpl_dma_wait(&x.jo[i]);
  }
}
