/*
 * tvm-deeploy profiling: instructions per step of the network and per hart, and DMA bytes per step.
 *
 * The generated network brackets every step with DPL_STEP_BEGIN(step) / DPL_STEP_END(step) (steps are
 * numbered from 1, as in report.json); they call these functions when the build defines DPL_PROFILE
 * and are empty otherwise. A HAL that counts instructions (hal/rv32.c) implements them: the calling
 * hart counts its own instructions between begin and end, and every other hart the instructions of
 * the fork tasks it runs during the step. Step 0 collects what runs outside any step.
 */
#ifndef DPL_PROFILE_H
#define DPL_PROFILE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void dpl_profile_step_begin(int32_t step);
void dpl_profile_step_end(int32_t step);

/* The number of harts counted, and the results (0 for a step or hart out of range). */
int32_t dpl_profile_harts(void);
uint64_t dpl_profile_instructions(int32_t step, int32_t hart);
uint64_t dpl_profile_dma_bytes(int32_t step, int32_t direction);

#ifdef __cplusplus
}
#endif

#endif /* DPL_PROFILE_H */
