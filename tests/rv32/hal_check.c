/* Checks hal/rv32.c on DPL_RV32_HARTS harts: fork/join over every core count, barriers (each core sees
   what every other core wrote before the barrier), core ids, 1-D and 2-D DMA and their byte counters,
   and (unless built with CHECK_COUNTS=0, for harts that run at once) the profile: equal work on every
   hart gives every worker the same instruction count.
   Prints "hal check: E errors" and one "workers: ..." line of counts; exits with E != 0. */
#include <stdint.h>
#include <stdio.h>

#include "dpl_hal.h"
#include "dpl_profile.h"

#define ROUNDS 3
#ifndef CHECK_COUNTS
#define CHECK_COUNTS 1
#endif

static volatile int32_t posted[DPL_RV32_HARTS][ROUNDS];
static int32_t seen[DPL_RV32_HARTS][ROUNDS];
static int32_t ids[DPL_RV32_HARTS], counts[DPL_RV32_HARTS];
static int32_t errors;

static void spin(int32_t n) {
  volatile int32_t i;
  for (i = 0; i < n; ++i) {
  }
}

/* Each round: post a value, meet at the barrier, add up what every core posted. */
static void exchange(void *arg) {
  const int32_t id = dpl_core_id(), cores = dpl_core_count();
  int32_t round, core;
  (void)arg;
  ids[id] = id;
  counts[id] = cores;
  for (round = 0; round < ROUNDS; ++round) {
    spin(100 * (id + 1));
    posted[id][round] = (round + 1) * 1000 + id;
    dpl_barrier();
    seen[id][round] = 0;
    for (core = 0; core < cores; ++core) seen[id][round] += posted[core][round];
    dpl_barrier();
  }
}

static void same_work(void *arg) {
  (void)arg;
  spin(2000);
}

static void check_exchange(int32_t cores) {
  int32_t id, round, expected;
  dpl_cluster_fork(cores, exchange, NULL);
  for (id = 0; id < cores; ++id) {
    errors += ids[id] != id || counts[id] != cores;
    for (round = 0; round < ROUNDS; ++round) {
      expected = cores * (round + 1) * 1000 + cores * (cores - 1) / 2;
      errors += seen[id][round] != expected;
    }
  }
}

static uint8_t l2_data[4][24] __attribute__((section(".l2")));
static uint8_t l1_data[4][8] __attribute__((section(".l1")));

static void check_dma(void) {
  dpl_dma_job_t job = {0};
  int32_t r, c;
  for (r = 0; r < 4; ++r) {
    for (c = 0; c < 24; ++c) l2_data[r][c] = (uint8_t)(r * 24 + c);
  }
  dpl_dma_reset_counters();
  dpl_dma_start_2d(&job, l1_data, &l2_data[0][8], 8, 4, 8, 24, DPL_DMA_TO_L1);
  dpl_dma_wait(&job);
  for (r = 0; r < 4; ++r) {
    for (c = 0; c < 8; ++c) errors += l1_data[r][c] != (uint8_t)(r * 24 + 8 + c);
  }
  dpl_dma_start_1d(&job, &l2_data[0][0], l1_data, 32, DPL_DMA_TO_L2);
  dpl_dma_wait(&job);
  errors += l2_data[1][7] != l1_data[3][7];
  errors += dpl_dma_bytes(DPL_DMA_TO_L1) != 32 || dpl_dma_bytes(DPL_DMA_TO_L2) != 32;
}

int main(void) {
  int32_t cores, hart;
  for (cores = 1; cores <= DPL_RV32_HARTS; ++cores) check_exchange(cores);
  errors += dpl_core_id() != 0 || dpl_core_count() != 1;
  check_dma();
  dpl_profile_step_begin(1);
  dpl_cluster_fork(DPL_RV32_HARTS, same_work, NULL);
  dpl_profile_step_end(1);
  printf("workers:");
  for (hart = 1; hart < dpl_profile_harts(); ++hart) {
    printf(" %llu", (unsigned long long)dpl_profile_instructions(1, hart));
    errors += CHECK_COUNTS && dpl_profile_instructions(1, hart) != dpl_profile_instructions(1, 1);
  }
  errors += CHECK_COUNTS && dpl_profile_instructions(1, 0) < 2000;
  printf("\nhal check: %ld errors\n", (long)errors);
  return errors != 0;
}
