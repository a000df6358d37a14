/* The NPU driver (see dpl_npu.h): fills the register block, rings the doorbell, polls the status. */
#include "dpl_npu.h"

void dpl_npu_submit(const dpl_npu_job_t *job) {
  volatile dpl_npu_regs_t *regs = dpl_npu_device();
  dpl_npu_wait(); /* one job at a time */
  regs->input = (uintptr_t)job->input;
  regs->weights = (uintptr_t)job->weights;
  regs->output = (uintptr_t)job->output;
  regs->input_stride = job->input_stride;
  regs->output_stride = job->output_stride;
  regs->rows = job->rows;
  regs->in_channels = job->in_channels;
  regs->out_channels = job->out_channels;
  regs->bias = (uintptr_t)job->bias;
  regs->mul = (uintptr_t)job->mul;
  regs->shift = (uintptr_t)job->shift;
  regs->out_zp = job->out_zp;
  regs->clip_lo = job->clip_lo;
  regs->clip_hi = job->clip_hi;
  regs->status = DPL_NPU_BUSY;
  regs->command = DPL_NPU_START;
  dpl_npu_doorbell();
}

void dpl_npu_wait(void) {
  volatile dpl_npu_regs_t *regs = dpl_npu_device();
  while (regs->status == DPL_NPU_BUSY) {
  }
}
