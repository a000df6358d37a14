/* dpl_hal.h and dpl_profile.h on bare-metal RV32: qemu's virt machine with DPL_RV32_HARTS harts
   (rv32imc or rv32imafc: no atomics), started by hal/rv32_start.S and laid out by hal/rv32.ld; hart 0
   runs main (picolibc, output through semihosting), the other harts run fork tasks.

   Fork/join and barrier without atomics: every shared flag has a single writer. Hart 0 publishes
   the fork descriptor under a sequence number (odd while it writes, then twice the fork's id: one
   store for every hart, and a hart that reads the descriptor while the next fork is written sees
   the number change and reads again); hart h writes done[h] when its task returns, and arrived[h]
   at each barrier, which hart 0 answers with release once every hart has arrived. A writer orders
   its data before its flag with `fence rw, w`, a reader its flag before the data with `fence r, rw`:
   on a weakly ordered core the flags alone would not publish the data.

   Waiting is wfi, woken by the hart's CLINT software interrupt (its "bell"). A hart that stops, at
   the end of its task or at a barrier, rings the next hart of the fork, and hart 0 as well when it
   sees every worker done (or arrived), so under qemu's round-robin scheduler the harts of a fork run
   one after the other, the last waking hart 0. That is deliberate: with -icount, minstret is qemu's
   virtual clock, which advances with the instructions of every hart, so the clock's advance is one
   hart's own instruction count only while no other hart runs. Each hart counts its own instructions
   that way, leaving out its sleeps and the DMA copies (the DMA engine's work, not the core's); a
   worker counts only inside its tasks, so its idle loop reads no clock. The
   protocol does not rely on that order: the harts may as well run at once (qemu without -icount runs
   them on host threads; the tests run both).

   DMA: the copy happens at start (the transfer is complete before dpl_dma_wait), and its bytes are
   counted per direction. Misuse aborts as on the host: a transfer started on a pending job, one
   larger than 128 KiB, a nested fork, a fork over more cores than the build has harts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpl_hal.h"
#include "dpl_profile.h"

/* the harts the program runs on (qemu -smp) and the steps profiled: the Makefile sets both */
#ifndef DPL_RV32_HARTS
#define DPL_RV32_HARTS 1
#endif
#ifndef DPL_PROFILE_STEPS
#define DPL_PROFILE_STEPS 0
#endif

#define RV32_DMA_MAX_BYTES 131072u
/* qemu virt's CLINT: one software-interrupt register per hart */
#define RV32_BELL ((volatile uint32_t *)0x02000000u)
/* what hart 0 writes to the start-up gate once .data and .bss are initialized */
#define RV32_GATE_OPEN 0x4f50454eu

#define RV32_RELEASE() __asm__ __volatile__("fence rw, w" ::: "memory")
#define RV32_ACQUIRE() __asm__ __volatile__("fence r, rw" ::: "memory")

void dpl_rv32_worker(uint32_t hart); /* entered from rv32_start.S, never returns */

static void rv32_fail(const char *what) __attribute__((noreturn));
static void rv32_fail(const char *what) {
  fprintf(stderr, "dpl rv32 HAL: %s\n", what);
  abort();
}

static uint32_t rv32_hart_id(void) {
  uint32_t id;
  __asm__ __volatile__("csrr %0, mhartid" : "=r"(id));
  return id;
}

/* minstret: under qemu -icount the virtual clock, one tick per instruction of any hart */
static uint64_t rv32_clock(void) {
  uint32_t hi, lo, again;
  do {
    __asm__ __volatile__("csrr %0, minstreth" : "=r"(hi));
    __asm__ __volatile__("csrr %0, minstret" : "=r"(lo));
    __asm__ __volatile__("csrr %0, minstreth" : "=r"(again));
  } while (hi != again);
  return ((uint64_t)hi << 32) | lo;
}

/* ------------------------------------------------------------------------------------------ */
/* per-hart state and flags */

typedef struct rv32_hart { /* touched by its own hart only */
  uint64_t own;     /* own instructions counted before `resumed` */
  uint64_t resumed; /* the clock when counting last resumed */
  uint32_t stamp;   /* barriers passed: every fork goes on from hart 0's count */
  int32_t cores;    /* of the fork whose task runs; 1 outside a task */
  int32_t in_task;
} rv32_hart_t;

typedef struct rv32_fork {
  dpl_task_t task;
  void *arg;
  int32_t cores;
  uint32_t stamp;
  int32_t step; /* the profiled step the fork belongs to */
} rv32_fork_t;

static rv32_hart_t rv32_harts[DPL_RV32_HARTS];
static rv32_fork_t rv32_fork_now;                      /* by hart 0, under rv32_fork_seq */
static volatile uint32_t rv32_fork_seq;                /* by hart 0: odd while it writes the fork, then 2 x id */
static volatile uint32_t rv32_done[DPL_RV32_HARTS];    /* [h] by hart h: the fork (its seq) it has finished */
static volatile uint32_t rv32_arrived[DPL_RV32_HARTS]; /* [h] by hart h: the barrier it reached */
static volatile uint32_t rv32_alive[DPL_RV32_HARTS];   /* [h] by hart h: started */
static volatile uint32_t rv32_release;                 /* by hart 0: the barrier every hart may pass */
static uint32_t rv32_trap_vector;                      /* by hart 0: crt0's trap handler */
/* by hart 0; in .noinit because the other harts read it while crt0 still clears .bss */
static volatile uint32_t rv32_gate __attribute__((section(".noinit")));

static uint64_t rv32_dma_moved[DPL_RV32_HARTS][2];                    /* [h][direction] by hart h */
static uint64_t rv32_instructions[DPL_PROFILE_STEPS + 1][DPL_RV32_HARTS]; /* [step][h] by hart h */
static uint64_t rv32_step_dma[DPL_PROFILE_STEPS + 1][2];             /* by hart 0 */
static int32_t rv32_step;                                              /* by hart 0; 0 outside a step */
static uint64_t rv32_step_start, rv32_step_dma_start[2];

static uint64_t rv32_own(const rv32_hart_t *self) { return self->own + (rv32_clock() - self->resumed); }

static void rv32_pause(rv32_hart_t *self) { self->own += rv32_clock() - self->resumed; }

static void rv32_resume(rv32_hart_t *self) { self->resumed = rv32_clock(); }

/* Ring a hart's bell, after this hart's flag writes (memory before the device write). */
static void rv32_ring(uint32_t hart) {
  __asm__ __volatile__("fence w, o" ::: "memory");
  RV32_BELL[hart] = 1u;
}

/* Sleep until the bell rings (at once if it rang already) and silence it before the caller
   checks its flag again (the device write before the memory reads). */
static void rv32_wait_for_bell(uint32_t hart) {
  __asm__ __volatile__("wfi" ::: "memory");
  RV32_BELL[hart] = 0u;
  __asm__ __volatile__("fence o, r" ::: "memory");
}

/* The same, not counting the time asleep (when other harts run). */
static void rv32_sleep(rv32_hart_t *self, uint32_t hart) {
  rv32_pause(self);
  rv32_wait_for_bell(hart);
  rv32_resume(self);
}

/* Stamps wrap around: a stamp has been reached when it is at most 2^31 behind. */
static int rv32_reached(uint32_t value, uint32_t target) { return (uint32_t)(value - target) < 0x80000000u; }

/* Whether the flags of harts 1..count-1 all show `value`: equal to it, or (stamps) having reached it.
   From the last hart down: the harts of a fork finish in order under qemu -icount, so a hart that is not
   the last stops at the first flag. */
static inline __attribute__((always_inline)) int rv32_all(volatile const uint32_t *flags, uint32_t count,
                                                         uint32_t value, int stamps) {
  uint32_t h;
  for (h = count - 1; h >= 1; --h) {
    if (stamps ? !rv32_reached(flags[h], value) : flags[h] != value) return 0;
  }
  return 1;
}

/* After hart `hart` wrote its flag among `count` harts: ring the next hart, and hart 0, which waits for
   every worker's flag, when this hart sees them all. With the full fence between its own write and
   reading the others', the last of several writers sees them all even when they write at once. */
static inline __attribute__((always_inline)) void rv32_signal(uint32_t hart, uint32_t count,
                                                             volatile const uint32_t *flags, uint32_t value,
                                                             int stamps) {
  const uint32_t next = (hart + 1u) % count;
  rv32_ring(next);
  __asm__ __volatile__("fence rw, rw" ::: "memory");
  if (next != 0 && rv32_all(flags, count, value, stamps)) rv32_ring(0u);
}

/* ------------------------------------------------------------------------------------------ */
/* start-up */

/* Hart 0, after crt0 has initialized memory: open the gate, then start the other harts in turn
   (each rings the next; the last rings hart 0) so that none is still starting when main runs. */
static void rv32_boot(void) __attribute__((constructor));
static void rv32_boot(void) {
  rv32_hart_t *self = &rv32_harts[0];
  self->cores = 1;
  rv32_resume(self);
  __asm__ __volatile__("csrr %0, mtvec" : "=r"(rv32_trap_vector));
  RV32_RELEASE();
  rv32_gate = RV32_GATE_OPEN;
  if (DPL_RV32_HARTS < 2) return;
  rv32_ring(1u);
  while (!rv32_all(rv32_alive, DPL_RV32_HARTS, 1u, 0)) rv32_sleep(self, 0u);
  RV32_ACQUIRE();
}

static void rv32_run(rv32_hart_t *self, dpl_task_t task, void *arg, int32_t cores, uint32_t stamp) {
  self->cores = cores;
  self->stamp = stamp;
  self->in_task = 1;
  task(arg);
  self->in_task = 0;
  self->cores = 1;
}

/* The fork published under `seq` (even), or 0 when hart 0 has begun writing another one meanwhile. */
static int rv32_read_fork(uint32_t seq, rv32_fork_t *fork) {
  __asm__ __volatile__("fence r, r" ::: "memory");
  *fork = rv32_fork_now;
  __asm__ __volatile__("fence r, r" ::: "memory");
  return rv32_fork_seq == seq;
}

void dpl_rv32_worker(uint32_t hart) {
  rv32_hart_t *self = &rv32_harts[hart];
  uint32_t seen = 0;
  while (rv32_gate != RV32_GATE_OPEN) rv32_wait_for_bell(hart);
  RV32_ACQUIRE();
  __asm__ __volatile__("csrw mtvec, %0" : : "r"(rv32_trap_vector));
  self->cores = 1;
  RV32_RELEASE();
  rv32_alive[hart] = 1u;
  rv32_signal(hart, DPL_RV32_HARTS, rv32_alive, 1u, 0);
  for (;;) {
    rv32_fork_t fork;
    const uint32_t seq = rv32_fork_seq;
    if (seq == seen || (seq & 1u)) {
      rv32_wait_for_bell(hart); /* asleep outside a task: not counted, so no clock to stop */
      continue;
    }
    if (!rv32_read_fork(seq, &fork)) continue;
    seen = seq;
    if ((int32_t)hart >= fork.cores) continue; /* a fork over fewer cores */
    RV32_ACQUIRE();
    self->own = 0;
    rv32_resume(self);
    rv32_run(self, fork.task, fork.arg, fork.cores, fork.stamp);
    rv32_instructions[fork.step][hart] += rv32_own(self);
    RV32_RELEASE();
    rv32_done[hart] = seq;
    rv32_signal(hart, (uint32_t)fork.cores, rv32_done, seq, 0);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* fork/join and barrier */

void dpl_cluster_fork(int32_t cores, dpl_task_t task, void *arg) {
  rv32_hart_t *self = &rv32_harts[0];
  uint32_t seq;
  if (rv32_hart_id() != 0 || self->in_task) rv32_fail("dpl_cluster_fork: nested forks are not supported");
  if (cores < 1 || cores > DPL_RV32_HARTS) {
    rv32_fail("dpl_cluster_fork: more cores than the build has harts (make rv32 HARTS=...)");
  }
  if (task == NULL) rv32_fail("dpl_cluster_fork: NULL task");
  if (cores == 1) {
    rv32_run(self, task, arg, 1, self->stamp);
    return;
  }
  seq = rv32_fork_seq + 2u;
  rv32_fork_seq = seq - 1u;
  __asm__ __volatile__("fence w, w" ::: "memory");
  rv32_fork_now.task = task;
  rv32_fork_now.arg = arg;
  rv32_fork_now.cores = cores;
  rv32_fork_now.stamp = self->stamp;
  rv32_fork_now.step = rv32_step;
  RV32_RELEASE();
  rv32_fork_seq = seq;
  rv32_run(self, task, arg, cores, self->stamp);
  rv32_ring(1u); /* after this hart's share: under -icount one hart runs at a time, each counting its own */
  do {
    rv32_sleep(self, 0u); /* returns at once if the last worker has rung already */
  } while (!rv32_all(rv32_done, (uint32_t)cores, seq, 0));
  RV32_ACQUIRE();
}

/* Each core on its own hart, as a fork: the harts are the cluster, and each counts its share as its own. */
void dpl_cluster_fork_independent(int32_t cores, dpl_task_t task, void *arg) { dpl_cluster_fork(cores, task, arg); }

int32_t dpl_core_id(void) {
  const uint32_t hart = rv32_hart_id();
  return rv32_harts[hart].in_task ? (int32_t)hart : 0;
}

int32_t dpl_core_count(void) { return rv32_harts[rv32_hart_id()].cores; }

void dpl_barrier(void) {
  const uint32_t hart = rv32_hart_id();
  rv32_hart_t *self = &rv32_harts[hart];
  const uint32_t cores = (uint32_t)self->cores;
  uint32_t stamp;
  if (DPL_RV32_HARTS < 2 || !self->in_task || cores <= 1) return;
  stamp = ++self->stamp;
  RV32_RELEASE();
  rv32_arrived[hart] = stamp;
  if (hart == 0) {
    rv32_ring(1u);
    while (!rv32_all(rv32_arrived, cores, stamp, 1)) rv32_sleep(self, 0u);
    /* the others' writes before the barrier, then ours, before the release */
    __asm__ __volatile__("fence rw, rw" ::: "memory");
    rv32_release = stamp;
  } else {
    rv32_signal(hart, cores, rv32_arrived, stamp, 1);
    while (!rv32_reached(rv32_release, stamp)) rv32_sleep(self, hart);
    RV32_ACQUIRE();
  }
}

/* ------------------------------------------------------------------------------------------ */
/* DMA */

static void rv32_dma_start(dpl_dma_job_t *job, void *dst, const void *src, uint32_t row_bytes, uint32_t rows,
                           uint32_t dst_stride, uint32_t src_stride, int32_t direction) {
  const uint32_t hart = rv32_hart_id();
  const uint64_t bytes = (uint64_t)row_bytes * (uint64_t)rows;
  uint32_t r;
  if (job == NULL) rv32_fail("dpl_dma_start: NULL job");
  if (job->pending) rv32_fail("dpl_dma_start: the job still has a transfer pending (missing dpl_dma_wait)");
  if (direction != DPL_DMA_TO_L1 && direction != DPL_DMA_TO_L2) rv32_fail("dpl_dma_start: bad direction");
  if (bytes > RV32_DMA_MAX_BYTES) rv32_fail("dpl_dma_start: transfer larger than 128 KiB");
  if (bytes > 0 && (dst == NULL || src == NULL)) rv32_fail("dpl_dma_start: NULL address");
  rv32_pause(&rv32_harts[hart]);
  for (r = 0; r < rows; ++r) {
    memcpy((uint8_t *)dst + (size_t)r * dst_stride, (const uint8_t *)src + (size_t)r * src_stride, row_bytes);
  }
  rv32_resume(&rv32_harts[hart]);
  job->pending = 1;
  rv32_dma_moved[hart][direction] += bytes;
}

void dpl_dma_start_1d(dpl_dma_job_t *job, void *dst, const void *src, uint32_t bytes, int32_t direction) {
  rv32_dma_start(job, dst, src, bytes, 1, bytes, bytes, direction);
}

void dpl_dma_start_2d(dpl_dma_job_t *job, void *dst, const void *src, uint32_t row_bytes, uint32_t rows,
                      uint32_t dst_stride, uint32_t src_stride, int32_t direction) {
  rv32_dma_start(job, dst, src, row_bytes, rows, dst_stride, src_stride, direction);
}

void dpl_dma_wait(dpl_dma_job_t *job) {
  if (job == NULL) rv32_fail("dpl_dma_wait: NULL job");
  job->pending = 0;
}

uint64_t dpl_dma_bytes(int32_t direction) {
  uint64_t total = 0;
  uint32_t h;
  if (direction != DPL_DMA_TO_L1 && direction != DPL_DMA_TO_L2) return 0;
  for (h = 0; h < DPL_RV32_HARTS; ++h) total += rv32_dma_moved[h][direction];
  return total;
}

/* Outside a fork only (it writes every hart's counters). */
void dpl_dma_reset_counters(void) { memset(rv32_dma_moved, 0, sizeof(rv32_dma_moved)); }

/* ------------------------------------------------------------------------------------------ */
/* profiling (hart 0, outside a fork) */

void dpl_profile_step_begin(int32_t step) {
  rv32_step = step >= 1 && step <= DPL_PROFILE_STEPS ? step : 0;
  rv32_step_dma_start[DPL_DMA_TO_L1] = dpl_dma_bytes(DPL_DMA_TO_L1);
  rv32_step_dma_start[DPL_DMA_TO_L2] = dpl_dma_bytes(DPL_DMA_TO_L2);
  rv32_step_start = rv32_own(&rv32_harts[0]);
}

void dpl_profile_step_end(int32_t step) {
  const uint64_t end = rv32_own(&rv32_harts[0]);
  (void)step;
  rv32_instructions[rv32_step][0] += end - rv32_step_start;
  rv32_step_dma[rv32_step][DPL_DMA_TO_L1] += dpl_dma_bytes(DPL_DMA_TO_L1) - rv32_step_dma_start[DPL_DMA_TO_L1];
  rv32_step_dma[rv32_step][DPL_DMA_TO_L2] += dpl_dma_bytes(DPL_DMA_TO_L2) - rv32_step_dma_start[DPL_DMA_TO_L2];
  rv32_step = 0;
}

int32_t dpl_profile_harts(void) { return DPL_RV32_HARTS; }

uint64_t dpl_profile_instructions(int32_t step, int32_t hart) {
  if (step < 0 || step > DPL_PROFILE_STEPS || hart < 0 || hart >= DPL_RV32_HARTS) return 0;
  return rv32_instructions[step][hart];
}

uint64_t dpl_profile_dma_bytes(int32_t step, int32_t direction) {
  if (step < 0 || step > DPL_PROFILE_STEPS) return 0;
  if (direction != DPL_DMA_TO_L1 && direction != DPL_DMA_TO_L2) return 0;
  return rv32_step_dma[step][direction];
}
