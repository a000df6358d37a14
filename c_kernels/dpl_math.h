/*
 * Float helpers of the kernels without libm calls: exp, rounding to an integer, clamping.
 *
 * dpl_expf(x): e^x = 2^n * e^f with n = round(x / ln 2) and f = x - n * ln 2 (ln 2 in two parts, the
 * first exact in n * DPL_LN2_HI), e^f by a degree-6 polynomial (relative minimax fit on |f| <= ln2 / 2),
 * 2^n from the exponent bits. Every step is one float32 operation in the order written (the build must not
 * contract a * b + c into a fused multiply-add: -std=c99 with gcc, -ffp-contract=off with clang);
 * tvm_deeploy/offload/reference.py's `expf` performs the same operations in NumPy and is bit-exact with it.
 * Maximum relative error against exp in float64: 9.531e-8 (0.80 x 2^-23, at x = 5.1991644) over all
 * 2,237,668,968 float32 inputs whose e^x is a normal float32 (scripts/measure_expf.py). Results below FLT_MIN
 * round once into the subnormals; x > 89 gives +inf (as does every x whose e^x exceeds FLT_MAX), x < -104
 * gives 0 (e^x below half the smallest subnormal), -inf gives 0, NaN gives NaN.
 */
#ifndef DPL_MATH_H
#define DPL_MATH_H

#include <float.h>
#include <math.h>
#include <stdint.h>

/* Float expressions must round to float at every step, as the NumPy references do. */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "the kernels need float arithmetic in float precision (FLT_EVAL_METHOD 0)"
#endif
/* ... and no fused multiply-add: clang contracts within an expression unless told (gcc with -std=c99 does not). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* For a loop body a kernel instantiates once per operand type (constant flags): each copy loses its branches. */
#if defined(__GNUC__)
#define DPL_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define DPL_ALWAYS_INLINE inline
#endif

#define DPL_ROUND_MAGIC 12582912.0f /* 1.5 * 2^23: (v + it) - it rounds |v| <= 2^22 to an integer, halves to even */
#define DPL_LOG2E 1.44269504f
#define DPL_LN2_HI 0.693359375f     /* 355 / 512: n * DPL_LN2_HI is exact for |n| < 2^15 */
#define DPL_LN2_LO -2.12194440e-4f  /* ln 2 - DPL_LN2_HI */
#define DPL_EXP_C2 0.4999999f
#define DPL_EXP_C3 0.1666642f
#define DPL_EXP_C4 0.04166825f
#define DPL_EXP_C5 0.008374849f
#define DPL_EXP_C6 0.0013835513f

/* The nearest integer to v, halves to even (nearbyintf in the default rounding mode), for |v| <= 2^22. */
static inline int32_t dpl_round_even(float v) {
#if defined(__riscv_flen) && __riscv_flen >= 32
  int32_t r;
  __asm__("fcvt.w.s %0, %1, rne" : "=r"(r) : "f"(v)); /* the rounding mode is in the instruction */
  return r;
#else
  return (int32_t)((v + DPL_ROUND_MAGIC) - DPL_ROUND_MAGIC);
#endif
}

/* min(max(v, lo), hi); NaN gives lo. (picolibc's fminf and fmaxf call __issignalingf: not those.) */
static inline float dpl_clampf(float v, float lo, float hi) {
#if defined(__riscv_flen) && __riscv_flen >= 32
  __asm__("fmax.s %0, %0, %1" : "+f"(v) : "f"(lo));
  __asm__("fmin.s %0, %0, %1" : "+f"(v) : "f"(hi));
  return v;
#else
  v = v > lo ? v : lo;
  return v < hi ? v : hi;
#endif
}

/* 2^n for -126 <= n <= 127. */
static inline float dpl_pow2i(int32_t n) {
  union {
    uint32_t bits;
    float value;
  } u;
  u.bits = (uint32_t)(n + 127) << 23;
  return u.value;
}

/* e^f with x = n * ln 2 + f: returns e^f and sets *n, for |x| <= 104. */
static inline float dpl_expf_reduced(float x, int32_t *n) {
  const float kf = (x * DPL_LOG2E + DPL_ROUND_MAGIC) - DPL_ROUND_MAGIC;
  const float f = (x - kf * DPL_LN2_HI) - kf * DPL_LN2_LO;
  float q = DPL_EXP_C6;
  q = q * f + DPL_EXP_C5;
  q = q * f + DPL_EXP_C4;
  q = q * f + DPL_EXP_C3;
  q = q * f + DPL_EXP_C2;
  *n = (int32_t)kf;
  return 1.0f + (f + (f * f) * q);
}

/* dpl_expf outside |x| < 87: NaN, overflow, subnormal results, underflow. 2^n in two factors, so that a
   subnormal result is rounded once (by the last multiplication). */
static inline float dpl_expf_edge(float x) {
  int32_t n, half;
  float p;
  if (x != x) return x;
  if (x > 89.0f) return HUGE_VALF;
  if (x < -104.0f) return 0.0f;
  p = dpl_expf_reduced(x, &n);
  half = n > 0 ? 64 : -64;
  return (p * dpl_pow2i(n - half)) * dpl_pow2i(half);
}

static inline float dpl_expf(float x) {
  int32_t n;
  float p;
  if (!(fabsf(x) < 87.0f)) return dpl_expf_edge(x);
  p = dpl_expf_reduced(x, &n);
  return p * dpl_pow2i(n);
}

#endif /* DPL_MATH_H */
