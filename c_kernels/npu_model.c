/* A bit-exact functional model of the NPU behind the driver (see dpl_npu.h), for this host and RV32:
   the doorbell runs the programmed job at once and marks the device ready. */
#include "dpl_npu.h"

static dpl_npu_regs_t npu_registers;

volatile dpl_npu_regs_t *dpl_npu_device(void) { return &npu_registers; }

static int8_t npu_requantize(int32_t acc, int32_t mul, int32_t shift, int32_t out_zp, int32_t lo, int32_t hi) {
  /* |acc * mul| <= 2^62: adding 2^(shift-1) cannot overflow; >> of a negative int64 is arithmetic (gcc). */
  int64_t t = ((int64_t)acc * (int64_t)mul + ((int64_t)1 << (shift - 1))) >> shift;
  t += out_zp;
  if (t < lo) t = lo;
  if (t > hi) t = hi;
  return (int8_t)t;
}

static void npu_run(const dpl_npu_regs_t *r) {
  const int8_t *input = (const int8_t *)r->input;
  const int8_t *weights = (const int8_t *)r->weights;
  int8_t *output = (int8_t *)r->output;
  const int32_t *bias = (const int32_t *)r->bias;
  const int32_t *mul = (const int32_t *)r->mul;
  const int32_t *shift = (const int32_t *)r->shift;
  const uint32_t k = r->in_channels;
  uint32_t row, c, kk;
  for (row = 0; row < r->rows; ++row) {
    const int8_t *x = input + row * r->input_stride;
    for (c = 0; c < r->out_channels; ++c) {
      /* channel c's weights: its group's block, then every DPL_NPU_GROUP-th byte from lane c % group */
      const int8_t *w = weights + (c / DPL_NPU_GROUP) * DPL_NPU_GROUP * k + c % DPL_NPU_GROUP;
      uint32_t acc = bias ? (uint32_t)bias[c] : 0u; /* int32 add, wraps like the cluster's */
      for (kk = 0; kk < k; ++kk) acc += (uint32_t)((int32_t)x[kk] * (int32_t)w[kk * DPL_NPU_GROUP]);
      output[row * r->output_stride + c] =
          npu_requantize((int32_t)acc, mul[c], shift[c], r->out_zp, r->clip_lo, r->clip_hi);
    }
  }
}

void dpl_npu_doorbell(void) {
  if (npu_registers.command == DPL_NPU_START) {
    npu_run(&npu_registers);
    npu_registers.command = DPL_NPU_IDLE;
  }
  npu_registers.status = DPL_NPU_READY;
}
