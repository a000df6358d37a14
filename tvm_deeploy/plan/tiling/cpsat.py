"""Running a tiler's CP-SAT model the same way for every op: deterministic, bounded, never worse than greedy.

The caller first computes a feasible greedy choice of the decision variables (every other variable of
the model follows from them). CP-SAT starts from it (a hint) and searches under a deterministic time
limit with one worker and a fixed seed, so the same input gives the same tiling at any machine load.
A wall-clock guard far above that limit only cuts a search short on a machine many times too slow
(the best solution so far is kept). When CP-SAT returns nothing, or `tiler` is "greedy", the model is
solved with the decisions fixed to the greedy choice, which only propagates.
"""

from __future__ import annotations

import time

from ortools.sat.python import cp_model

from ...targets.platforms import TILERS
from .plan import TilingError
from .policy import TilingPolicy


def _solver(policy: TilingPolicy, fixed: bool) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = policy.seed
    solver.parameters.fix_variables_to_their_hinted_value = fixed
    if not fixed:  # with the decisions fixed, solving only propagates: no limit can cut it short
        solver.parameters.max_deterministic_time = policy.deterministic_seconds
        solver.parameters.max_time_in_seconds = policy.wall_seconds_guard
    return solver


def solve(model: cp_model.CpModel, greedy: dict[cp_model.IntVar, int], tiler: str, policy: TilingPolicy,
          what: str) -> tuple[cp_model.CpSolver, str, float]:
    """(solver holding the chosen solution, its status, seconds taken).

    Status: "optimal", "feasible (search limit)" (CP-SAT's best when cut short), "greedy" (tiler
    "greedy") or "greedy (solver found none)"."""
    if tiler not in TILERS:
        raise ValueError(f"unknown tiler {tiler!r}; tilers are {', '.join(TILERS)}")
    for var, value in greedy.items():
        model.AddHint(var, int(value))
    start = time.perf_counter()
    if tiler == "cpsat":
        solver = _solver(policy, fixed=False)
        status = solver.Solve(model)
        if status == cp_model.OPTIMAL:
            return solver, "optimal", time.perf_counter() - start
        if status == cp_model.FEASIBLE:
            return solver, "feasible (search limit)", time.perf_counter() - start
    solver = _solver(policy, fixed=True)
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        choice = {var.Name(): int(value) for var, value in greedy.items()}
        raise TilingError(f"{what}: the greedy tiling {choice} does not satisfy the tiler's model "
                          f"(solver status {solver.StatusName(status)}); this is a bug")
    label = "greedy" if tiler == "greedy" else "greedy (solver found none)"
    return solver, label, time.perf_counter() - start
