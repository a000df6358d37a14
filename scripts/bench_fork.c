/* The RV32 HAL's fork/join cost (scripts/bench_fork.py): FORKS forks of an empty task over every hart.
   Prints the instructions per fork of the whole cluster (qemu -icount's clock, which advances with every
   hart's instructions, so this includes each worker's wake-up and return to sleep) and of each hart as
   the profile counts them (hart 0: the whole fork call; a worker: inside its task). */
#include <stdint.h>
#include <stdio.h>

#include "dpl_hal.h"
#include "dpl_profile.h"

#define FORKS 100

static void nothing(void *arg) { (void)arg; }

static uint64_t cluster_clock(void) {
  uint32_t hi, lo, again;
  do {
    __asm__ __volatile__("csrr %0, minstreth" : "=r"(hi));
    __asm__ __volatile__("csrr %0, minstret" : "=r"(lo));
    __asm__ __volatile__("csrr %0, minstreth" : "=r"(again));
  } while (hi != again);
  return ((uint64_t)hi << 32) | lo;
}

int main(void) {
  int32_t i, hart;
  uint64_t start, end;
  dpl_cluster_fork(DPL_RV32_HARTS, nothing, NULL); /* the first fork: the workers leave start-up */
  start = cluster_clock();
  for (i = 0; i < FORKS; ++i) dpl_cluster_fork(DPL_RV32_HARTS, nothing, NULL);
  end = cluster_clock();
  dpl_profile_step_begin(1);
  for (i = 0; i < FORKS; ++i) dpl_cluster_fork(DPL_RV32_HARTS, nothing, NULL);
  dpl_profile_step_end(1);
  printf("cluster %llu\n", (unsigned long long)((end - start) / FORKS));
  for (hart = 0; hart < DPL_RV32_HARTS; ++hart) {
    printf("hart %ld %llu\n", (long)hart, (unsigned long long)(dpl_profile_instructions(1, hart) / FORKS));
  }
  return 0;
}
