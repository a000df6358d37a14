/*
 * tvm-deeploy kernel library: the C functions that generated code calls.
 *
 * Every kernel is plain C99 with no allocation, no I/O and no host-only
 * assumption, so the same source builds for this host and for bare-metal RV32.
 * All matrices are row-major and contiguous unless strides are given.
 * The integer semantics are defined once by tvm_deeploy/offload/reference.py; these
 * kernels are bit-exact against it.
 */
#ifndef DPL_KERNELS_H
#define DPL_KERNELS_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "dpl_hal.h"
#include "dpl_kernel_args.h"
#include "dpl_npu.h"
#include "dpl_platform.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y[m][n] = sum_k a[m][k] * B(k, n) + (bias ? bias[n] : 0), row-major with leading dimensions
   (elements between consecutive rows) lda, ldb, ldy:
   a[m * lda + k];  B(k, n) = b_transposed ? b[n * ldb + k] : b[k * ldb + n];  y[m * ldy + n]. */
void dpl_gemm_f32(const float *a, int32_t lda, const float *b, int32_t ldb, int32_t b_transposed,
                  const float *bias, float *y, int32_t ldy, int32_t m_dim, int32_t n_dim, int32_t k_dim);

/* acc[m][n] = sum_k (a[m][k] - a_zp) * (B(k, n) - b_zp)   (int32, layouts as dpl_gemm_f32)
   then rq->bias and the requantization of rq->mode; rq's per-column vectors are indexed from
   column 0 of this call. y is int8_t for FIXED and INT_OPS, int32_t for NONE; ldy counts elements.
   Requires k_dim * 65025 < 2^31 so the accumulator cannot overflow. */
void dpl_gemm_s8(const int8_t *a, int32_t lda, const int8_t *b, int32_t ldb, int32_t b_transposed,
                 void *y, int32_t ldy, int32_t m_dim, int32_t n_dim, int32_t k_dim,
                 int32_t a_zp, int32_t b_zp, const dpl_requant_t *rq);

/* A GEMM cut into output tiles that fit L1 (the tiler's plan), run with double-buffered DMA:
   while tile i computes, tile i+1's operands come in and tile i-1's result goes out; each tile's
   rows (or, for tiles with fewer rows than cores and at least as many columns, its columns) are
   split over `cores` cores. Tiles run batch by batch, row block by row block, column block
   fastest; an operand block already in L1 is not fetched again. The reduction is never split.
   An operand whose two slot offsets are equal is single-buffered (fetched after the tile that
   used the previous block). Y holds float (DPL_F32), int32 (DPL_S8 with rq NULL or mode NONE)
   or int8; every slot must be 4-byte aligned (the tiler aligns to 8). The engine (enum dpl_engine) computes
   the tiles. bias: DPL_F32 only (per column, or NULL); rq: DPL_S8 only (its vectors indexed by global column). */
void dpl_gemm_tiled(const dpl_gemm_plan_t *plan, uint8_t *l1, const void *a, const void *b, void *y,
                    const float *bias, const dpl_requant_t *rq);

/* Row-wise softmax over the last axis: y = exp(x - max) / sum(exp(x - max)). */
void dpl_softmax_f32(const float *x, float *y, int32_t rows, int32_t cols);

/* Fused attention o = softmax(q k^T * scale + mask [causal]) v per batch and query head, cut into
   tiles that fit L1 (the tiler's plan): tile_h query heads x tile_q query rows, keys in blocks of
   tile_kv. Q, K, V, the mask and O live in L2 with arbitrary element strides; blocks move through
   double-buffered DMA slots in the L1 arena, and each tile's (head, row) pairs are shared among
   `cores` cores (one fork for the whole call, barriers between tiles).

   Schedule (tvm_deeploy/plan/tiling/attention.py predicts its DMA traffic, keep the two in step):
   - row tiles in order batch, head block, query block; a row tile visits the key blocks its last
     row can see (causal masking skips the rest; none at all: its rows are 0, or out_zp for int8);
   - DPL_F32 runs one pass over those blocks with an online softmax (running maximum and sum);
     DPL_S8 with more than one block runs two: the first finds each row's exact maximum score, the
     second sums the integer weights (so the result does not depend on the blocking);
   - a step is one key block of one pass; Q is fetched once per row tile; K (and V, needed in the
     last pass) only when the step's (batch, head block, key block) differs from the block held;
     the mask block every step (not at all for a mask of one row that is +-0 up to the last key it
     shows: it adds nothing); O goes out after the row tile's last step;
   - while step s computes, step s+1's new blocks come in (K and V after step s when single-
     buffered: l1_k[0] == l1_k[1]); O alternates between its two slots by row tile.
   Query head h reads K/V head (h / kv_div) % kv_heads; k and v strides are per K/V head.
   DPL_F32: masked-out positions get weight 0; a row with no visible key or only -inf scores is 0.
   DPL_S8: the integer algorithm of tvm_deeploy/offload/reference.py (attention_s8), bit-exact; no mask. */
/* q, k, v: float or int8_t per plan->dtype; mask: float (F32 only) or NULL; o: like q.
   exp2_lut: S8 only, reference.EXP2_LUT (256 entries), copied into L1 at l1_lut. */
void dpl_attention_tiled(const dpl_attention_plan_t *plan, uint8_t *l1, const void *q, const void *k,
                         const void *v, const float *mask, void *o, const uint16_t *exp2_lut);

/* ---- Element-wise and row-wise ops of a transformer layer, on `cores` cores (one fork per call,
   contiguous blocks of rows or elements per core). Float ops in the order TVM's C computes them.
   A dpl_quant_t pointer NULL means the operand is float; else int8 quantized with it. */

/* This core's contiguous share [*begin, *end) of n items split over the cores of the current fork. */
static inline void dpl_core_share(int32_t n, int32_t *begin, int32_t *end) {
  const int32_t cores = dpl_core_count(), core = dpl_core_id();
  const int32_t chunk = n / cores, extra = n % cores;
  *begin = core * chunk + (core < extra ? core : extra);
  *end = *begin + chunk + (core < extra ? 1 : 0);
}

/* TVM's quantize and dequantize (dpl_quant_t). nearbyintf (halves to even) without its libm call:
   for |v| <= 2^22, (v + 1.5 * 2^23) - 1.5 * 2^23 rounds v to an integer in float32's default rounding
   mode, which needs float expressions evaluated in float (FLT_EVAL_METHOD 0); v is clamped to
   [-512, 512] first, which changes no result after the clamp to int8. */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "dpl_quantize_s8 needs float arithmetic in float precision (FLT_EVAL_METHOD 0)"
#endif
static inline int8_t dpl_quantize_s8(float x, const dpl_quant_t *q) {
  const float magic = 12582912.0f; /* 1.5 * 2^23 */
  float v = x / q->scale;
  v = v < -512.0f ? -512.0f : v > 512.0f ? 512.0f : v;
  v = ((v + magic) - magic) + (float)q->zp;
  v = v < -128.0f ? -128.0f : v > 127.0f ? 127.0f : v;
  return (int8_t)v;
}

static inline float dpl_dequantize_s8(int8_t x, const dpl_quant_t *q) {
  return (float)((int32_t)x - q->zp) * q->scale;
}

/* y = a + B, n elements; B float (b_quant NULL) or int8 dequantized with b_quant. */
void dpl_residual_add(const float *a, const void *b, const dpl_quant_t *b_quant, float *y, int32_t n, int32_t cores);

/* RMSNorm of each row of x [rows][cols]: inv = 1 / sqrtf(sum_j(x*x) / cols + eps) (sequential sum),
   y = (inv * x) * weight; y float (y_quant NULL) or int8 quantized with y_quant. Rows are split over
   the cores, or with fewer rows than cores each row's columns (every core sums the whole row). */
void dpl_rms_norm(const float *x, const float *weight, void *y, const dpl_quant_t *y_quant, int32_t rows,
                  int32_t cols, float eps, int32_t cores);

/* SwiGLU y = silu(A) * B = (A * (1 / (1 + expf(0 - A)))) * B, n elements; A and B float or int8
   dequantized, y float or int8 quantized (NULL quant: float). */
void dpl_swiglu(const void *a, const dpl_quant_t *a_quant, const void *b, const dpl_quant_t *b_quant, void *y,
                const dpl_quant_t *y_quant, int32_t n, int32_t cores);

/* y = TVM's quantize of float x to int8 with `quant` (dpl_quantize_s8), n elements. */
void dpl_quantize(const float *x, const dpl_quant_t *quant, int8_t *y, int32_t n, int32_t cores);

/* Rotary embedding on interleaved pairs: x [tokens][heads][half][2] (float, or int8 dequantized with
   x_quant), cos and sin [tokens or 1][half] (cs_token_stride 0: one row for every token);
   y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c, y float like x. */
void dpl_rope(const void *x, const dpl_quant_t *x_quant, const float *cos, const float *sin,
              int32_t cs_token_stride, float *y, int32_t tokens, int32_t heads, int32_t half, int32_t cores);

#ifdef __cplusplus
}
#endif

#endif /* DPL_KERNELS_H */
