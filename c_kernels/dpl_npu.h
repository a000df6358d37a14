/*
 * The NPU (an N-EUREKA-style accelerator) as software sees it: a memory-mapped register block that a
 * driver fills with one job (a linear layer on a block of rows: int8 activations from L1, int8 weights
 * resident in the NPU's weight memory, per-output-channel requantization) and starts.
 *
 * Weights are packed offline (tvm_deeploy/targets/npu.py): output channels in groups of DPL_NPU_GROUP,
 * packed[g][kk][c] = W[kk][g * DPL_NPU_GROUP + c], the last group zero-padded. Arithmetic, per row r
 * and output channel c: acc = bias[c] + sum_kk x[r][kk] * W[kk][c] (int32), then
 * y = clamp(((int64)acc * mul[c] + 2^(shift[c]-1)) >> shift[c]) + out_zp, lo, hi) (int8).
 */
#ifndef DPL_NPU_H
#define DPL_NPU_H

#include <stdint.h>

#include "dpl_platform.h"

#ifdef __cplusplus
extern "C" {
#endif

/* DPL_NPU_GROUP (dpl_platform.h): output channels the MAC array computes side by side */

enum dpl_npu_command { DPL_NPU_IDLE = 0, DPL_NPU_START = 1 };
enum dpl_npu_status { DPL_NPU_READY = 0, DPL_NPU_BUSY = 1 };

/* The register block. Addresses are pointer-sized so the same driver serves RV32 and this host. */
typedef struct dpl_npu_regs {
  uintptr_t input;          /* int8 [rows][in_channels], rows input_stride bytes apart (L1) */
  uintptr_t weights;        /* packed int8, from the first output channel's group (weight memory) */
  uintptr_t output;         /* int8 [rows][out_channels], rows output_stride bytes apart (L1) */
  uint32_t input_stride, output_stride;
  uint32_t rows, in_channels, out_channels;
  uintptr_t bias, mul, shift; /* int32 [out_channels] requantization parameters */
  int32_t out_zp, clip_lo, clip_hi;
  uint32_t command;         /* write DPL_NPU_START to run the job */
  uint32_t status;          /* DPL_NPU_BUSY until the job is done */
} dpl_npu_regs_t;

/* One job, as the driver's caller describes it. */
typedef struct dpl_npu_job {
  const int8_t *input;
  uint32_t input_stride;
  const int8_t *weights;
  int8_t *output;
  uint32_t output_stride;
  uint32_t rows, in_channels, out_channels;
  const int32_t *bias, *mul, *shift;
  int32_t out_zp, clip_lo, clip_hi;
} dpl_npu_job_t;

/* Driver: program the registers and start the job; wait until the NPU is ready again. */
void dpl_npu_submit(const dpl_npu_job_t *job);
void dpl_npu_wait(void);

/* The device behind the driver (c_kernels/npu_model.c: a bit-exact functional model, for this host
   and RV32): its register block, and the doorbell a write to the command register rings. */
volatile dpl_npu_regs_t *dpl_npu_device(void);
void dpl_npu_doorbell(void);

#ifdef __cplusplus
}
#endif

#endif /* DPL_NPU_H */
