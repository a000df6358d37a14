"""Running a tiler's CP-SAT model the same way for every op: deterministic and bounded."""

from __future__ import annotations

import time

from ortools.sat.python import cp_model

from .plan import TilingError


def solve(model: cp_model.CpModel, seconds: float, seed: int, what: str) -> tuple[cp_model.CpSolver, str, float]:
    """(solver holding the best solution, "optimal" or "feasible (time limit)", seconds taken).

    One search worker and a fixed seed make the result repeatable; on a time-out the best solution
    found is kept. Raises TilingError naming `what` when there is none."""
    solver = cp_model.CpSolver()
    solver.parameters.num_search_workers = 1
    solver.parameters.random_seed = seed
    solver.parameters.max_time_in_seconds = seconds
    start = time.perf_counter()
    status = solver.Solve(model)
    elapsed = time.perf_counter() - start
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise TilingError(f"{what}: the tiler found no tiling within {seconds} s "
                          f"(solver status {solver.StatusName(status)})")
    return solver, "optimal" if status == cp_model.OPTIMAL else "feasible (time limit)", elapsed
