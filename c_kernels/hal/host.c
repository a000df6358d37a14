/* dpl_hal.h on this host: the cluster emulated with POSIX threads and a deferred-copy DMA.

   DMA: dpl_dma_start_* copies nothing: it records the transfer and fills the destination with a
   poison pattern (between start and wait the destination is undefined: the hardware may be
   writing it at any moment); dpl_dma_wait performs the copy. A schedule that reads a
   destination before waiting for it, overwrites a source before its transfer was waited, or
   starts a fetch into a buffer that is still being read therefore computes wrong results here
   (on hardware each is a race), so the tests catch double-buffering mistakes. Misuse that is
   always a bug aborts the process: starting a transfer on a job that is still pending, a
   transfer larger than the platform's 128 KiB, a nested fork.

   Fork/join: dpl_cluster_fork runs core 0 on the calling thread and cores 1.. on worker threads that
   stay alive from fork to fork (started when a fork first needs them), and waits for them; forks from
   several threads run one after the other. dpl_cluster_fork_independent runs the cores one after another
   on the calling thread (a barrier there aborts). dpl_barrier is a generation-counting barrier on a mutex and
   condition variable (available under any feature macro, unlike pthread_barrier_t).

   Host only: compiles as C99 (with the POSIX feature macro below) and as C++; link with -pthread. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpl_hal.h"

/* largest single transfer of the cluster DMA, and the most cores a fork may ask for */
#define DPL_HOST_DMA_MAX_BYTES 131072u
#define DPL_HOST_MAX_CORES 64
/* what a destination holds between start and wait: -61 as int8, -391.5 as float */
#define DPL_HOST_DMA_POISON 0xC3

/* The failure hook: a bug in the caller, not a recoverable condition. */
static void dplh_fail(const char *what) {
  fprintf(stderr, "dpl host HAL: %s\n", what);
  fflush(stderr);
  abort();
}

/* ------------------------------------------------------------------------------------------ */
/* DMA */

static uint64_t dplh_dma_counter[2]; /* bytes per direction, updated atomically */

static void dplh_dma_start(dpl_dma_job_t *job, void *dst, const void *src, uint32_t row_bytes,
                           uint32_t rows, uint32_t dst_stride, uint32_t src_stride, int32_t direction) {
  const uint64_t bytes = (uint64_t)row_bytes * (uint64_t)rows;
  if (job == NULL) dplh_fail("dpl_dma_start: NULL job");
  if (job->pending) dplh_fail("dpl_dma_start: the job still has a transfer pending (missing dpl_dma_wait)");
  if (direction != DPL_DMA_TO_L1 && direction != DPL_DMA_TO_L2) dplh_fail("dpl_dma_start: bad direction");
  if (bytes > DPL_HOST_DMA_MAX_BYTES) dplh_fail("dpl_dma_start: transfer larger than 128 KiB");
  if (bytes > 0 && (dst == NULL || src == NULL)) dplh_fail("dpl_dma_start: NULL address");
  job->dst = (uint8_t *)dst;
  job->src = (const uint8_t *)src;
  job->row_bytes = row_bytes;
  job->rows = rows;
  job->dst_stride = dst_stride;
  job->src_stride = src_stride;
  job->direction = direction;
  job->pending = 1;
  if (row_bytes > 0) {
    uint32_t r;
    for (r = 0; r < rows; ++r) memset(job->dst + (size_t)r * dst_stride, DPL_HOST_DMA_POISON, row_bytes);
  }
  __atomic_fetch_add(&dplh_dma_counter[direction], bytes, __ATOMIC_RELAXED);
}

void dpl_dma_start_1d(dpl_dma_job_t *job, void *dst, const void *src, uint32_t bytes, int32_t direction) {
  dplh_dma_start(job, dst, src, bytes, 1, bytes, bytes, direction);
}

void dpl_dma_start_2d(dpl_dma_job_t *job, void *dst, const void *src, uint32_t row_bytes, uint32_t rows,
                      uint32_t dst_stride, uint32_t src_stride, int32_t direction) {
  dplh_dma_start(job, dst, src, row_bytes, rows, dst_stride, src_stride, direction);
}

void dpl_dma_wait(dpl_dma_job_t *job) {
  uint32_t r;
  if (job == NULL) dplh_fail("dpl_dma_wait: NULL job");
  if (!job->pending) return;
  if (job->row_bytes > 0) {
    for (r = 0; r < job->rows; ++r) {
      memcpy(job->dst + (size_t)r * job->dst_stride, job->src + (size_t)r * job->src_stride, job->row_bytes);
    }
  }
  job->pending = 0;
}

uint64_t dpl_dma_bytes(int32_t direction) {
  if (direction != DPL_DMA_TO_L1 && direction != DPL_DMA_TO_L2) return 0;
  return __atomic_load_n(&dplh_dma_counter[direction], __ATOMIC_RELAXED);
}

void dpl_dma_reset_counters(void) {
  __atomic_store_n(&dplh_dma_counter[DPL_DMA_TO_L1], 0, __ATOMIC_RELAXED);
  __atomic_store_n(&dplh_dma_counter[DPL_DMA_TO_L2], 0, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------------------------------ */
/* fork/join and barrier */

/* The fork being run. Forks are serialized (dplh_fork_lock), so one descriptor serves them all. */
typedef struct dplh_fork {
  dpl_task_t task;
  void *arg;
  int32_t cores;
  int32_t independent; /* dpl_cluster_fork_independent: the cores run one after another, no barrier */
  int32_t arrived;     /* barrier state, under `lock` */
  uint32_t generation; /* barriers passed */
  pthread_mutex_t lock;
  pthread_cond_t cond;
} dplh_fork_t;

/* The worker threads (cores 1..), started on the first fork that needs them and kept: a thread per fork
   costs far more than the small glue steps a forward pass forks for. Under `lock`: `forks` counts the
   forks published (a worker waits for it to change), `cores` is the last one's, `pending` the workers still
   running it. A worker may wake late, after forks that did not include it: it skips to the newest. The
   threads end when the program does or this code is unloaded (a library TVM loads: dplh_stop_workers). */
typedef struct dplh_pool {
  pthread_mutex_t lock;
  pthread_cond_t wake;     /* workers: a fork was published */
  pthread_cond_t finished; /* the forking thread: the last worker is done */
  int32_t workers;         /* threads started: cores 1..workers */
  uint32_t forks;
  int32_t cores;
  int32_t pending;
  int32_t stopping;
  uint32_t first_fork[DPL_HOST_MAX_CORES]; /* [core]: `forks` when its thread started */
  pthread_t threads[DPL_HOST_MAX_CORES];   /* [core] */
} dplh_pool_t;

static pthread_mutex_t dplh_fork_lock = PTHREAD_MUTEX_INITIALIZER;
static dplh_fork_t dplh_fork = {NULL, NULL, 0, 0, 0, 0, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};
static dplh_pool_t dplh_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
                                0, 0, 0, 0, 0, {0}, {0}};

/* the fork this thread is running a task of (NULL outside a task), and its core id there */
static __thread dplh_fork_t *dplh_current;
static __thread int32_t dplh_core;

static void dplh_run(dplh_fork_t *cl, int32_t id) {
  dplh_current = cl;
  dplh_core = id;
  cl->task(cl->arg);
  dplh_current = NULL;
  dplh_core = 0;
}

/* Core `id`: wait for each fork, run its task when the fork includes this core, report done. */
static void *dplh_worker(void *p) {
  const int32_t id = (int32_t)(intptr_t)p;
  uint32_t seen;
  pthread_mutex_lock(&dplh_pool.lock);
  seen = dplh_pool.first_fork[id];
  for (;;) {
    int32_t included;
    while (dplh_pool.forks == seen && !dplh_pool.stopping) pthread_cond_wait(&dplh_pool.wake, &dplh_pool.lock);
    if (dplh_pool.stopping) break;
    seen = dplh_pool.forks;
    included = id < dplh_pool.cores;
    pthread_mutex_unlock(&dplh_pool.lock);
    if (included) dplh_run(&dplh_fork, id);
    pthread_mutex_lock(&dplh_pool.lock);
    if (included && --dplh_pool.pending == 0) pthread_cond_signal(&dplh_pool.finished);
  }
  pthread_mutex_unlock(&dplh_pool.lock);
  return NULL;
}

/* Under the pool's lock: threads for cores 1..cores-1 (they wait for forks until stopped). */
static void dplh_start_workers(int32_t cores) {
  while (dplh_pool.workers < cores - 1) {
    const int32_t id = dplh_pool.workers + 1;
    dplh_pool.first_fork[id] = dplh_pool.forks;
    if (pthread_create(&dplh_pool.threads[id], NULL, dplh_worker, (void *)(intptr_t)id) != 0) {
      dplh_fail("dpl_cluster_fork: pthread_create failed");
    }
    dplh_pool.workers = id;
  }
}

/* End the worker threads (between forks) before this code goes away: at exit, and when a library holding it
   is unloaded, where a thread left waiting would later return into unmapped code. */
#if defined(__GNUC__)
__attribute__((destructor))
#endif
static void dplh_stop_workers(void) {
  int32_t id, workers;
  pthread_mutex_lock(&dplh_fork_lock);
  pthread_mutex_lock(&dplh_pool.lock);
  dplh_pool.stopping = 1;
  workers = dplh_pool.workers;
  pthread_cond_broadcast(&dplh_pool.wake);
  pthread_mutex_unlock(&dplh_pool.lock);
  for (id = 1; id <= workers; ++id) pthread_join(dplh_pool.threads[id], NULL);
  pthread_mutex_lock(&dplh_pool.lock);
  dplh_pool.workers = 0;
  dplh_pool.stopping = 0;
  pthread_mutex_unlock(&dplh_pool.lock);
  pthread_mutex_unlock(&dplh_fork_lock);
}

void dpl_cluster_fork(int32_t cores, dpl_task_t task, void *arg) {
  if (dplh_current != NULL) dplh_fail("dpl_cluster_fork: nested forks are not supported");
  if (cores < 1 || cores > DPL_HOST_MAX_CORES) dplh_fail("dpl_cluster_fork: cores out of range");
  if (task == NULL) dplh_fail("dpl_cluster_fork: NULL task");
  pthread_mutex_lock(&dplh_fork_lock);
  dplh_fork.task = task;
  dplh_fork.arg = arg;
  dplh_fork.cores = cores;
  dplh_fork.arrived = 0;
  dplh_fork.generation = 0;
  if (cores > 1) {
    pthread_mutex_lock(&dplh_pool.lock);
    dplh_start_workers(cores);
    dplh_pool.cores = cores;
    dplh_pool.pending = cores - 1;
    ++dplh_pool.forks;
    pthread_cond_broadcast(&dplh_pool.wake);
    pthread_mutex_unlock(&dplh_pool.lock);
  }
  dplh_run(&dplh_fork, 0);
  if (cores > 1) {
    pthread_mutex_lock(&dplh_pool.lock);
    while (dplh_pool.pending > 0) pthread_cond_wait(&dplh_pool.finished, &dplh_pool.lock);
    pthread_mutex_unlock(&dplh_pool.lock);
  }
  pthread_mutex_unlock(&dplh_fork_lock);
}

void dpl_cluster_fork_independent(int32_t cores, dpl_task_t task, void *arg) {
  dplh_fork_t alone;
  int32_t id;
  if (dplh_current != NULL) dplh_fail("dpl_cluster_fork_independent: nested forks are not supported");
  if (cores < 1 || cores > DPL_HOST_MAX_CORES) dplh_fail("dpl_cluster_fork_independent: cores out of range");
  if (task == NULL) dplh_fail("dpl_cluster_fork_independent: NULL task");
  alone.task = task;
  alone.arg = arg;
  alone.cores = cores;
  alone.independent = 1;
  for (id = 0; id < cores; ++id) dplh_run(&alone, id);
}

int32_t dpl_core_id(void) { return dplh_current != NULL ? dplh_core : 0; }

int32_t dpl_core_count(void) { return dplh_current != NULL ? dplh_current->cores : 1; }

void dpl_barrier(void) {
  dplh_fork_t *cl = dplh_current;
  uint32_t generation;
  if (cl == NULL || cl->cores <= 1) return;
  if (cl->independent) dplh_fail("dpl_barrier: inside dpl_cluster_fork_independent");
  pthread_mutex_lock(&cl->lock);
  generation = cl->generation;
  if (++cl->arrived == cl->cores) {
    cl->arrived = 0;
    ++cl->generation;
    pthread_cond_broadcast(&cl->cond);
  } else {
    while (generation == cl->generation) pthread_cond_wait(&cl->cond, &cl->lock);
  }
  pthread_mutex_unlock(&cl->lock);
}

#undef DPL_HOST_DMA_MAX_BYTES
#undef DPL_HOST_MAX_CORES
#undef DPL_HOST_DMA_POISON
