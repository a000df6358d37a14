/*
 * tvm-deeploy hardware abstraction: the cluster DMA and fork/join over the cluster's cores.
 *
 * Generated code and kernels call only these functions; each platform supplies one implementation
 * (c_kernels/hal/host.c emulates the cluster on this host; c_kernels/hal/rv32.c runs it bare metal on
 * the harts of qemu's RISC-V virt machine).
 * A DMA transfer is asynchronous: between start and dpl_dma_wait on the same job its destination
 * is undefined (the host implementation fills it with a poison pattern) and must be neither read,
 * written nor targeted by another transfer, and its source must not be overwritten.
 * One transfer moves at most 128 KiB (the cluster DMA's limit).
 */
#ifndef DPL_HAL_H
#define DPL_HAL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum dpl_dma_direction {
  DPL_DMA_TO_L1 = 0, /* L2 -> L1 */
  DPL_DMA_TO_L2 = 1  /* L1 -> L2 */
};

/* One transfer in flight. The fields belong to the HAL; zero-initialize before first use. */
typedef struct dpl_dma_job {
  uint8_t *dst;
  const uint8_t *src;
  uint32_t row_bytes, rows, dst_stride, src_stride;
  int32_t direction;
  int32_t pending;
} dpl_dma_job_t;

/* Start copying `bytes` contiguous bytes. */
void dpl_dma_start_1d(dpl_dma_job_t *job, void *dst, const void *src, uint32_t bytes, int32_t direction);

/* Start copying `rows` rows of `row_bytes` bytes; consecutive rows are dst_stride / src_stride bytes apart. */
void dpl_dma_start_2d(dpl_dma_job_t *job, void *dst, const void *src, uint32_t row_bytes, uint32_t rows,
                      uint32_t dst_stride, uint32_t src_stride, int32_t direction);

/* Block until the job's transfer is complete; returns at once for a job with nothing pending. */
void dpl_dma_wait(dpl_dma_job_t *job);

/* Bytes moved so far in one direction, and a reset, for reports and tests. */
uint64_t dpl_dma_bytes(int32_t direction);
void dpl_dma_reset_counters(void);

typedef void (*dpl_task_t)(void *arg);

/* Run task(arg) on cluster cores 0..cores-1 and return when every core has finished (join). */
void dpl_cluster_fork(int32_t cores, dpl_task_t task, void *arg);

/* The same for a task that never calls dpl_barrier: its cores are independent, so the platform may run them
   one after another (the host HAL does, on the calling thread: waking a thread costs more than the small
   steps of TVM's glue that fork this way). */
void dpl_cluster_fork_independent(int32_t cores, dpl_task_t task, void *arg);

/* Inside a task: this core's id and the number of cores of the current fork (outside a fork: 0 and 1). */
int32_t dpl_core_id(void);
int32_t dpl_core_count(void);

/* Inside a task: wait until every core of the current fork has reached the barrier. */
void dpl_barrier(void);

#ifdef __cplusplus
}
#endif

#endif /* DPL_HAL_H */
