"""The host HAL's fork/join (c_kernels/hal/host.c): worker threads kept alive from fork to fork, forks of
any size in any order, barriers, forks from several threads at once; checked under ThreadSanitizer."""

import signal
import subprocess

import pytest
from conftest import C_FLAGS, HAL_HOST, KERNEL_DIR, run_checked

FORK_STRESS_C = r"""
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "dpl_hal.h"

#define MAX_CORES 8
#define FORKS 600

static pthread_t seen_thread[MAX_CORES + 1];
static int32_t slots[MAX_CORES];
static __thread int32_t tasks_run; /* by the thread: a worker kept alive counts every fork it ran */
static int32_t tasks_run_by_core[MAX_CORES];

typedef struct round {
  int32_t value, errors[MAX_CORES], same_thread[MAX_CORES];
} round_t;

/* Every core writes its slot, waits at the barrier, and checks every other core's slot. */
static void task(void *p) {
  round_t *r = (round_t *)p;
  const int32_t id = dpl_core_id(), cores = dpl_core_count();
  int32_t i;
  ++tasks_run;
  slots[id] = r->value + id;
  dpl_barrier();
  for (i = 0; i < cores; ++i) r->errors[id] += slots[i] != r->value + i;
  dpl_barrier();
  r->same_thread[id] = pthread_equal(seen_thread[id], pthread_self());
}

/* Records the thread of each core. */
static void record(void *p) {
  (void)p;
  ++tasks_run;
  seen_thread[dpl_core_id()] = pthread_self();
}

static void report(void *p) {
  (void)p;
  tasks_run_by_core[dpl_core_id()] = ++tasks_run;
}

/* A second thread forking at the same time as main (forks run one after the other). */
static void count_task(void *p) {
  int32_t *counts = (int32_t *)p;
  ++tasks_run;
  counts[dpl_core_id()] += 1;
}

static void *other_forker(void *p) {
  int32_t i;
  for (i = 0; i < FORKS; ++i) dpl_cluster_fork(1 + i % 4, count_task, p);
  return NULL;
}

int main(void) {
  int32_t i, c, errors = 0, moved = 0, counts[MAX_CORES] = {0};
  pthread_t other;
  dpl_cluster_fork(MAX_CORES, record, NULL);
  pthread_create(&other, NULL, other_forker, counts);
  for (i = 0; i < FORKS; ++i) {
    round_t r = {0};
    const int32_t cores = 1 + (i * 5) % MAX_CORES;
    r.value = 100 * i;
    dpl_cluster_fork(cores, task, &r);
    for (c = 0; c < cores; ++c) {
      errors += r.errors[c];
      moved += c > 0 && !r.same_thread[c];
    }
  }
  pthread_join(other, NULL);
  dpl_cluster_fork(MAX_CORES, report, NULL);
  printf("tasks");
  for (c = 0; c < MAX_CORES; ++c) printf(" %d", (int)tasks_run_by_core[c]);
  printf("\n");
  printf("errors %d moved %d counts %d %d %d %d core %d of %d\n", (int)errors, (int)moved, (int)counts[0],
         (int)counts[1], (int)counts[2], (int)counts[3], (int)dpl_core_id(), (int)dpl_core_count());
  return 0;
}
"""


FORKS, CORES = 600, 8


def _expected_counts() -> list[int]:
    """How often core c runs in the second thread's forks over 1 + i % 4 cores."""
    return [sum(1 for i in range(FORKS) if c < 1 + i % 4) for c in range(4)]


def _expected_tasks_run() -> list[int]:
    """The tasks each core's thread has run by the last fork, when every worker stays the same thread: core 0 is
    the main thread (every main fork); worker c ran every fork of either thread that included it."""
    main_forks = [CORES] + [1 + (i * 5) % CORES for i in range(FORKS)] + [CORES]
    other_forks = [1 + i % 4 for i in range(FORKS)]
    return [len(main_forks)] + [sum(cores > c for cores in main_forks + other_forks) for c in range(1, CORES)]


@pytest.mark.parametrize("sanitizer", [None, "thread"])
def test_forks_reuse_their_threads_and_stay_correct(tmp_path, sanitizer):
    source = tmp_path / "fork_stress.c"
    source.write_text(FORK_STRESS_C)
    program = tmp_path / "fork_stress"
    flags = [f"-fsanitize={sanitizer}", "-g"] if sanitizer else []
    run_checked(["gcc", *C_FLAGS, *flags, "-I", KERNEL_DIR, source, HAL_HOST, "-pthread", "-o", program])
    tasks, results = run_checked([program]).stdout.splitlines()
    assert [int(v) for v in tasks.split()[1:]] == _expected_tasks_run()
    out = results.split()
    assert [int(v) for v in out[5:9]] == _expected_counts()
    # no wrong slot seen after a barrier, every worker core on the thread it had in the first fork
    assert out[:4] == ["errors", "0", "moved", "0"]
    assert out[9:] == ["core", "0", "of", "1"]


INDEPENDENT_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpl_hal.h"

static void record(void *p) {
  int *seen = (int *)p;
  seen[dpl_core_id()] = 10 * dpl_core_count() + seen[8]++;
}

static void waits(void *p) {
  (void)p;
  dpl_barrier();
}

int main(int argc, char **argv) {
  int seen[9] = {0}, c;
  if (argc > 1 && strcmp(argv[1], "barrier") == 0) dpl_cluster_fork_independent(2, waits, NULL);
  dpl_cluster_fork_independent(8, record, seen);
  for (c = 0; c < 8; ++c) printf("%d ", seen[c]);
  printf("| %d of %d\n", (int)dpl_core_id(), (int)dpl_core_count());
  return 0;
}
"""


def test_an_independent_fork_runs_every_core_on_the_calling_thread(tmp_path):
    source = tmp_path / "independent.c"
    source.write_text(INDEPENDENT_C)
    program = tmp_path / "independent"
    run_checked(["gcc", *C_FLAGS, "-I", KERNEL_DIR, source, HAL_HOST, "-pthread", "-o", program])
    # cores 0..7 one after another, each seeing a fork of 8 cores; outside: core 0 of 1
    assert run_checked([program]).stdout == "80 81 82 83 84 85 86 87 | 0 of 1\n"
    waited = subprocess.run([str(program), "barrier"], capture_output=True, text=True)
    assert waited.returncode == -signal.SIGABRT
    assert "dpl_barrier: inside dpl_cluster_fork_independent" in waited.stderr
