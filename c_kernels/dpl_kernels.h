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
#include "dpl_math.h"
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

/* dpl_gemm_s8 with a constant B packed in lane words (c_kernels/gemm_lanes.c, tvm_deeploy/plan/lanes.py):
   panels of DPL_GEMM_S8_LANES_PANEL columns, [panel][k][4] words, the first panel at column 0 of this call; the
   sums are taken out of the lanes every k_chunk steps. No activation zero point (folded into rq's bias). */
void dpl_gemm_s8_lanes(const int8_t *a, int32_t lda, const uint32_t *panels, int32_t k_chunk, void *y,
                       int32_t ldy, int32_t m_dim, int32_t n_dim, int32_t k_dim, int32_t b_zp,
                       const dpl_requant_t *rq);

/* DPL_REQUANT_FIXED of one corrected accumulator `acc` (bias and zero points in) when the column's shift is above
   32 and lo <= hi, the case QDQ layers have: q = floor(acc * mul / 2^(shift - 1)) needs only the high word of the
   product, the rounding (q >> 1) + (q & 1) is (q + 1) >> 1, and the clamp is one unsigned compare while the value
   is in range. sh33 = shift - 33, range = hi - lo. >> on a negative int32 is arithmetic (gcc guarantees it). */
static inline int32_t dpl_requant_fixed_high(int32_t acc, int32_t mul, int32_t sh33, int32_t out_zp, int32_t lo,
                                             int32_t hi, uint32_t range) {
  const int32_t q = (int32_t)(((int64_t)acc * (int64_t)mul) >> 32) >> sh33;
  const int32_t t = ((q + 1) >> 1) + out_zp;
  return (uint32_t)t - (uint32_t)lo > range ? (t < lo ? lo : hi) : t;
}

/* dpl_gemm_s8's parts that dpl_gemm_s8_lanes shares: a row's sum; whether the fast FIXED store applies to
   columns n0 .. n0 + cols - 1; the requantizing store of a block of sums (row i of s at s + i *
   DPL_GEMM_S8_BLOCK) with each row's zero-point correction and col_add[j] (bias minus column correction). */
#define DPL_GEMM_S8_BLOCK 16
int32_t dpl_gemm_s8_row_sum(const int8_t *a, int32_t k_dim);
int32_t dpl_gemm_s8_high_shifts(const dpl_requant_t *rq, int32_t n0, int32_t cols);
void dpl_gemm_s8_store(const int32_t *s, int32_t rows, int32_t width, const uint32_t *row_corr,
                       const uint32_t *col_add, int32_t n, void *y, int32_t ldy, const dpl_requant_t *rq,
                       int32_t high_shifts);

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

/* Row-wise softmax over the last axis: e = dpl_expf(x - max), y = e / sum(e) (the sum in order); rows split
   over `cores` cores (one fork). */
void dpl_softmax_f32(const float *x, float *y, int32_t rows, int32_t cols, int32_t cores);

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
   DPL_F32 with k_dequant / v_dequant: K / V is int8 in L2 (an int8 KV cache); its blocks move as int8
   and, at a step whose block is new, the cores dequantize it into l1_k_f32 / l1_v_f32 as TVM does
   ((float)(x - zp) * scale), so the result is bit for bit that over the dequantized tensor.
   DPL_S8: the integer algorithm of tvm_deeploy/offload/reference.py (attention_s8), bit-exact; no mask. */
/* q, k, v: float or int8_t per plan->dtype (k, v int8_t when dequantized in L1); mask: float (F32 only) or NULL; o: like q.
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

/* TVM's quantize and dequantize (dpl_quant_t). Quantize: clamp(nearbyint(x / scale) + zp, -128, 127) computed
   as nearbyint(clamp(x / scale, -128 - zp, 127 - zp)) + zp, the same for integer bounds (nearbyint is
   monotone); on cores with F the clamp is fmax.s / fmin.s and the rounding one fcvt.w.s (dpl_math.h).
   Loops take the parameters out of the struct once (dpl_quantizer), since their int8 stores may alias it. */
typedef struct {
  float scale, lo, hi; /* lo, hi: -128 - zp, 127 - zp */
  int32_t zp;
} dpl_quantizer_t;

static inline dpl_quantizer_t dpl_quantizer(const dpl_quant_t *q) {
  dpl_quantizer_t r;
  r.scale = q->scale;
  r.lo = (float)(-128 - q->zp);
  r.hi = (float)(127 - q->zp);
  r.zp = q->zp;
  return r;
}

/* For an operand that is float: never used to convert. */
static inline dpl_quantizer_t dpl_quantizer_none(void) {
  dpl_quantizer_t r;
  r.scale = 1.0f;
  r.lo = -128.0f;
  r.hi = 127.0f;
  r.zp = 0;
  return r;
}

static inline int8_t dpl_quantize_with(float x, dpl_quantizer_t q) {
  return (int8_t)(dpl_round_even(dpl_clampf(x / q.scale, q.lo, q.hi)) + q.zp);
}

static inline float dpl_dequantize_with(int8_t x, dpl_quantizer_t q) {
  return (float)((int32_t)x - q.zp) * q.scale;
}

/* y = a + B, n elements; B float (b_quant NULL) or int8 dequantized with b_quant. */
void dpl_residual_add(const float *a, const void *b, const dpl_quant_t *b_quant, float *y, int32_t n, int32_t cores);

/* RMSNorm of each row of x [rows][cols]: inv = 1 / sqrtf(sum_j(x*x) / cols + eps) (sequential sum),
   y = (inv * x) * weight; y float (y_quant NULL) or int8 quantized with y_quant. Rows are split over
   the cores, or with fewer rows than cores each row's columns (every core sums the whole row). */
void dpl_rms_norm(const float *x, const float *weight, void *y, const dpl_quant_t *y_quant, int32_t rows,
                  int32_t cols, float eps, int32_t cores);

/* SwiGLU y = silu(A) * B = (A * (1 / (1 + dpl_expf(0 - A)))) * B, n elements; A float (a_silu NULL) or int8,
   whose silu a_silu gives: the 256 values silu(dequantize(q)) at index q + 128 (reference.silu_table); B float
   or int8 dequantized, y float or int8 quantized (NULL quant: float). */
void dpl_swiglu(const void *a, const float *a_silu, const void *b, const dpl_quant_t *b_quant, void *y,
                const dpl_quant_t *y_quant, int32_t n, int32_t cores);

/* y = TVM's quantize of float x to int8 with `quant` (dpl_quantize_with), n elements. */
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
