"""Static memory planning: every buffer of a program at a fixed offset in one arena per memory level.

Plain data in, plain data out. A buffer has a size, a memory level and a lifetime: the steps `first`
to `last` (inclusive) of a straight-line program. Two buffers whose lifetimes intersect must not
overlap in memory. An in-place candidate `(a, b)` says the step that produces `b` may write it over
`a` (same size, `a` used for the last time where `b` is produced); such pairs are merged first, so
they share one offset.

Per level, the `planner` (platforms.PLANNERS) chooses the offsets:
- "cpsat": OR-tools CP-SAT minimising the arena (one worker, fixed seed and a deterministic time limit,
  so the same input gives the same plan at any machine load), started from the greedy-by-size
  placement and never worse than it. Above `max_solver_buffers`, or when the greedy placement already
  meets the lower bound, the greedy placement is used as it is.
- "greedy": the greedy-by-size placement alone.
- "tvm": the sharing TVM's StaticPlanBlockMemory finds, laid out as TVM allocates it: in program order,
  each block takes a free storage of its dtype (free: its last user ran at an earlier step) whose size
  is within a factor TVM_MATCH_RANGE, the smallest not smaller than the block, else the largest smaller
  one, which grows; otherwise a new storage. Storages lie one after the other in order of creation,
  as separate allocations would.
The lower bound is the largest sum of live bytes at any step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..targets.platforms import PLANNERS

DEFAULT_ALIGNMENT = 16
DEFAULT_TIME_LIMIT = 2.0  # CP-SAT deterministic seconds per level
DEFAULT_MAX_SOLVER_BUFFERS = 400
TVM_MATCH_RANGE = 16  # StaticPlanBlockMemory reuses a storage within this size ratio


@dataclass(frozen=True)
class Buffer:
    name: str
    size: int  # bytes
    level: str
    first: int  # first step that uses it (writes it)
    last: int  # last step that uses it, inclusive
    dtype: str = ""  # the "tvm" planner shares storage only between buffers of one dtype

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class LevelPlan:
    level: str
    offsets: dict[str, int]  # buffer name -> byte offset in the level's arena
    arena_bytes: int
    lower_bound: int  # the largest sum of (aligned) live bytes at any step
    greedy_bytes: int
    method: str  # "greedy", "cp-sat" or "tvm"
    status: str  # "optimal" (meets the lower bound or proven), "feasible", "greedy only",
    # "greedy (solver found none)" (CP-SAT's budget ran out first), "tvm"
    buffers: int  # planned blocks after in-place merges
    inplace: tuple[tuple[str, str], ...]  # merged in-place pairs


@dataclass(frozen=True)
class MemoryPlan:
    levels: dict[str, LevelPlan] = field(default_factory=dict)

    def offset(self, name: str) -> tuple[str, int]:
        """(level, offset) of a buffer."""
        for plan in self.levels.values():
            if name in plan.offsets:
                return plan.level, plan.offsets[name]
        raise KeyError(name)


def _align(size: int, alignment: int) -> int:
    return -(-max(size, 1) // alignment) * alignment


@dataclass
class _Block:
    """A group of buffers that share one place (a buffer alone, or an in-place chain)."""

    names: list[str]
    size: int  # aligned bytes
    first: int
    last: int
    dtype: str = ""


def _merge_inplace(buffers: Sequence[Buffer], inplace: Iterable[tuple[str, str]],
                   alignment: int) -> tuple[list[_Block], list[tuple[str, str]]]:
    by_name = {b.name: b for b in buffers}
    block_of: dict[str, _Block] = {}
    blocks: list[_Block] = []
    for b in buffers:
        block_of[b.name] = _Block([b.name], _align(b.size, alignment), b.first, b.last, b.dtype)
        blocks.append(block_of[b.name])
    merged, used_as_source, used_as_target = [], set(), set()
    for a_name, b_name in inplace:
        a, b = by_name.get(a_name), by_name.get(b_name)
        if a is None or b is None or a_name == b_name or a_name in used_as_source or b_name in used_as_target:
            continue
        block_a, block_b = block_of[a_name], block_of[b_name]
        # `a` ends exactly where `b` starts (the step that reads `a` writes `b`), was made earlier, and
        # is the tail of its chain; `b` heads its chain.
        if (a.level != b.level or a.size != b.size or block_a is block_b or a.first >= b.first
                or block_a.last != b.first or a.last != b.first or block_b.first != b.first):
            continue
        block_a.names += block_b.names
        block_a.last = max(block_a.last, block_b.last)
        for name in block_b.names:
            block_of[name] = block_a
        blocks.remove(block_b)
        used_as_source.add(a_name)
        used_as_target.add(b_name)
        merged.append((a_name, b_name))
    return blocks, merged


def lower_bound(blocks: Sequence[_Block]) -> int:
    """The largest sum of sizes of blocks live at one step."""
    events: dict[int, int] = defaultdict(int)
    for block in blocks:
        events[block.first] += block.size
        events[block.last + 1] -= block.size
    live = best = 0
    for step in sorted(events):
        live += events[step]
        best = max(best, live)
    return best


def _conflicts(blocks: Sequence[_Block]) -> list[list[int]]:
    return [[j for j, other in enumerate(blocks) if j != i and block.first <= other.last and other.first <= block.last]
            for i, block in enumerate(blocks)]


def greedy_by_size(blocks: Sequence[_Block]) -> list[int]:
    """Largest first (ties: earlier first, then input order); each at the lowest offset that fits."""
    conflicts = _conflicts(blocks)
    order = sorted(range(len(blocks)), key=lambda i: (-blocks[i].size, blocks[i].first, i))
    offsets: list[int | None] = [None] * len(blocks)
    for i in order:
        taken = sorted((offsets[j], offsets[j] + blocks[j].size) for j in conflicts[i] if offsets[j] is not None)
        candidate = 0
        for start, end in taken:
            if candidate + blocks[i].size <= start:
                break
            candidate = max(candidate, end)
        offsets[i] = candidate
    return [int(o) for o in offsets]


def tvm_storage_sharing(blocks: Sequence[_Block]) -> list[int]:
    """Offsets of the "tvm" planner (see the module docstring)."""
    order = sorted(range(len(blocks)), key=lambda i: (blocks[i].first, i))
    storage_of: list[int] = [0] * len(blocks)
    sizes: list[int] = []  # bytes of each storage, in order of creation
    free: dict[str, list[int]] = defaultdict(list)  # dtype -> free storages
    released = 0
    by_last = sorted(range(len(blocks)), key=lambda i: (blocks[i].last, i))
    for i in order:
        block = blocks[i]
        while released < len(by_last) and blocks[by_last[released]].last < block.first:
            j = by_last[released]
            free[blocks[j].dtype].append(storage_of[j])
            released += 1
        pool = free[block.dtype]
        larger = [s for s in pool if block.size <= sizes[s] <= block.size * TVM_MATCH_RANGE]
        smaller = [s for s in pool if block.size > sizes[s] >= block.size // TVM_MATCH_RANGE]
        if larger:
            storage = min(larger, key=lambda s: (sizes[s], s))
        elif smaller:
            storage = max(smaller, key=lambda s: (sizes[s], -s))
            sizes[storage] = block.size
        else:
            storage = len(sizes)
            sizes.append(block.size)
        if storage in pool:
            pool.remove(storage)
        storage_of[i] = storage
    starts = [sum(sizes[:s]) for s in range(len(sizes))]
    return [starts[storage_of[i]] for i in range(len(blocks))]


def _arena(blocks: Sequence[_Block], offsets: Sequence[int]) -> int:
    return max((o + b.size for o, b in zip(offsets, blocks)), default=0)


def _cp_sat(blocks: Sequence[_Block], start: Sequence[int], upper: int, lower: int, alignment: int,
            time_limit: float) -> tuple[list[int], bool] | None:
    """Offsets minimising the arena, or None without a solution better than `upper`."""
    from ortools.sat.python import cp_model

    unit = alignment
    model = cp_model.CpModel()
    horizon = upper // unit
    arena = model.NewIntVar(lower // unit, horizon, "arena")
    x_intervals, y_intervals, offsets = [], [], []
    for i, block in enumerate(blocks):
        size = block.size // unit
        offset = model.NewIntVar(0, horizon - size, f"o{i}")
        model.Add(offset + size <= arena)
        model.AddHint(offset, start[i] // unit)
        offsets.append(offset)
        duration = block.last + 1 - block.first
        x_intervals.append(model.NewFixedSizeIntervalVar(block.first, duration, f"t{i}"))
        y_intervals.append(model.NewFixedSizeIntervalVar(offset, size, f"m{i}"))
    model.AddNoOverlap2D(x_intervals, y_intervals)
    model.Minimize(arena)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.max_deterministic_time = time_limit
    # A wall-clock guard far above the deterministic limit: only a very slow machine reaches it.
    solver.parameters.max_time_in_seconds = 30.0 * time_limit
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return [solver.Value(o) * unit for o in offsets], status == cp_model.OPTIMAL


def plan_level(level: str, buffers: Sequence[Buffer], inplace: Iterable[tuple[str, str]] = (),
               alignment: int = DEFAULT_ALIGNMENT, time_limit: float = DEFAULT_TIME_LIMIT,
               max_solver_buffers: int = DEFAULT_MAX_SOLVER_BUFFERS, planner: str = "cpsat") -> LevelPlan:
    """Offsets for the buffers of one level (see the module docstring)."""
    if alignment <= 0:
        raise ValueError(f"alignment must be positive, got {alignment}")
    if planner not in PLANNERS:
        raise ValueError(f"unknown planner {planner!r}; planners are {', '.join(PLANNERS)}")
    for b in buffers:
        if b.level != level or b.size < 0 or b.first > b.last:
            raise ValueError(f"bad buffer for level {level}: {b}")
    if len({b.name for b in buffers}) != len(buffers):
        raise ValueError("buffer names must be unique")
    blocks, merged = _merge_inplace(buffers, inplace, alignment)
    bound = lower_bound(blocks)
    offsets = greedy_by_size(blocks)
    greedy = _arena(blocks, offsets)
    method, status = "greedy", "optimal" if greedy == bound else "greedy only"
    if planner == "tvm":
        offsets = tvm_storage_sharing(blocks)
        method = status = "tvm"
    elif planner == "cpsat" and greedy > bound and len(blocks) <= max_solver_buffers and time_limit > 0:
        solved = _cp_sat(blocks, offsets, greedy, bound, alignment, time_limit)
        method = "cp-sat"
        status = "greedy (solver found none)"
        if solved is not None:
            status = "feasible"
            candidate, proven = solved
            if _arena(blocks, candidate) < greedy:
                offsets = candidate
            if proven or _arena(blocks, offsets) == bound:
                status = "optimal"
    by_name = {}
    for block, offset in zip(blocks, offsets):
        for name in block.names:
            by_name[name] = offset
    plan = LevelPlan(level=level, offsets={b.name: by_name[b.name] for b in buffers},
                     arena_bytes=_arena(blocks, offsets), lower_bound=bound, greedy_bytes=greedy, method=method,
                     status=status, buffers=len(blocks), inplace=tuple(merged))
    verify(plan, buffers)
    return plan


def plan_memory(buffers: Sequence[Buffer], inplace: Iterable[tuple[str, str]] = (), **options) -> MemoryPlan:
    """One `LevelPlan` per level that has buffers, levels in order of first appearance."""
    inplace = list(inplace)
    levels: dict[str, list[Buffer]] = {}
    for b in buffers:
        levels.setdefault(b.level, []).append(b)
    return MemoryPlan({level: plan_level(level, group, inplace, **options) for level, group in levels.items()})


def verify(plan: LevelPlan, buffers: Sequence[Buffer]) -> None:
    """Raise if two buffers live at the same step overlap in memory (in-place pairs excepted)."""
    shared = set(plan.inplace) | {(b, a) for a, b in plan.inplace}
    for i, a in enumerate(buffers):
        oa = plan.offsets[a.name]
        if oa < 0 or oa + a.size > plan.arena_bytes:
            raise AssertionError(f"{a.name} at {oa} (+{a.size}) is outside the arena of {plan.arena_bytes} bytes")
        for b in buffers[i + 1:]:
            if not a.overlaps_in_time(b) or (a.name, b.name) in shared:
                continue
            ob = plan.offsets[b.name]
            if oa < ob + b.size and ob < oa + a.size and a.size and b.size:
                raise AssertionError(f"{a.name} [{oa}, {oa + a.size}) and {b.name} [{ob}, {ob + b.size}) "
                                     f"overlap while both are live")
