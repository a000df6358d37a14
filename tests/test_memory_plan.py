"""The static memory planner: valid plans (no two live buffers overlap), bounds, CP-SAT vs greedy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_deeploy.plan.memory import Buffer, greedy_by_size, plan_level, plan_memory

ALIGN = 16


def aligned(size: int) -> int:
    return -(-max(size, 1) // ALIGN) * ALIGN


def assert_valid(plan, buffers, inplace=()):
    """Independent of the planner's own check: offsets inside the arena, live buffers disjoint."""
    shared = set(plan.inplace) | {(b, a) for a, b in plan.inplace}
    assert set(plan.inplace) <= set(inplace)
    for a, b in plan.inplace:
        assert plan.offsets[a] == plan.offsets[b]
    for i, a in enumerate(buffers):
        oa = plan.offsets[a.name]
        assert oa % ALIGN == 0 and 0 <= oa and oa + a.size <= plan.arena_bytes
        for b in buffers[i + 1:]:
            if a.first <= b.last and b.first <= a.last and (a.name, b.name) not in shared:
                ob = plan.offsets[b.name]
                assert oa + a.size <= ob or ob + b.size <= oa, (a, b, oa, ob)


def live_sum_bound(buffers, merged=()):
    """The largest sum of aligned live sizes, counting an in-place pair once at the shared step."""
    steps = range(min(b.first for b in buffers), max(b.last for b in buffers) + 1)
    shared = {b for _, b in merged}
    by_name = {b.name: b for b in buffers}
    best = 0
    for t in steps:
        total = sum(aligned(b.size) for b in buffers if b.first <= t <= b.last)
        total -= sum(aligned(by_name[b].size) for b in shared if by_name[b].first == t)
        best = max(best, total)
    return best


@st.composite
def programs(draw, max_buffers=14, max_steps=5):
    n = draw(st.integers(1, max_buffers))
    buffers = []
    for i in range(n):
        first = draw(st.integers(0, max_steps))
        last = first + draw(st.integers(0, 3))
        buffers.append(Buffer(f"b{i}", draw(st.integers(0, 200)), "L2", first, last))
    return buffers


@settings(max_examples=60, deadline=None)
@given(programs())
def test_random_programs_give_valid_plans_within_bounds(buffers):
    plan = plan_level("L2", buffers, time_limit=0.5)
    assert_valid(plan, buffers)
    assert plan.lower_bound == live_sum_bound(buffers)
    assert plan.lower_bound <= plan.arena_bytes <= plan.greedy_bytes
    assert plan.method in ("greedy", "cp-sat")
    if plan.status == "optimal" and plan.method == "greedy":
        assert plan.arena_bytes == plan.lower_bound


@settings(max_examples=40, deadline=None)
@given(programs(), st.data())
def test_in_place_candidates_share_memory_only_when_valid(buffers, data):
    pairs = data.draw(st.lists(st.tuples(st.sampled_from([b.name for b in buffers]),
                                         st.sampled_from([b.name for b in buffers])), max_size=6))
    plan = plan_level("L2", buffers, pairs, time_limit=0.5)
    assert_valid(plan, buffers, pairs)
    by_name = {b.name: b for b in buffers}
    for a, b in plan.inplace:
        # b is produced by the step that reads a for the last time, over a's memory.
        assert by_name[a].last == by_name[b].first > by_name[a].first
        assert by_name[a].size == by_name[b].size
    sources = [a for a, _ in plan.inplace]
    targets = [b for _, b in plan.inplace]
    assert len(set(sources)) == len(sources) and len(set(targets)) == len(targets)
    assert plan.lower_bound == live_sum_bound(buffers, plan.inplace)


def test_cp_sat_beats_greedy_where_greedy_is_not_optimal():
    buffers = [Buffer("b0", 64, "L2", 0, 2), Buffer("b1", 32, "L2", 0, 2), Buffer("b2", 80, "L2", 3, 3),
               Buffer("b3", 48, "L2", 2, 4)]
    plan = plan_level("L2", buffers)
    assert plan.greedy_bytes == 160
    assert (plan.method, plan.status, plan.arena_bytes, plan.lower_bound) == ("cp-sat", "optimal", 144, 144)
    assert_valid(plan, buffers)


def test_greedy_fallback_above_the_buffer_threshold():
    buffers = [Buffer("b0", 64, "L2", 0, 2), Buffer("b1", 32, "L2", 0, 2), Buffer("b2", 80, "L2", 3, 3),
               Buffer("b3", 48, "L2", 2, 4)]
    plan = plan_level("L2", buffers, max_solver_buffers=3)
    assert (plan.method, plan.status, plan.arena_bytes) == ("greedy", "greedy only", 160)
    assert_valid(plan, buffers)


def test_large_graph_is_fast_and_deterministic():
    buffers = [Buffer(f"b{i}", 512 + (i * 7919) % 4096, "L2", i // 3, i // 3 + (i * 31) % 6) for i in range(600)]
    first = plan_level("L2", buffers)
    second = plan_level("L2", list(buffers))
    assert first == second
    assert first.method == "greedy"
    assert_valid(first, buffers)


def test_plans_are_deterministic_with_the_solver():
    buffers = [Buffer(f"b{i}", 16 * (1 + (i * 5) % 9), "L2", (i * 3) % 7, (i * 3) % 7 + i % 3) for i in range(24)]
    plans = [plan_level("L2", buffers, time_limit=0.3) for _ in range(2)]
    assert plans[0] == plans[1]


def test_levels_are_planned_separately():
    buffers = [Buffer("a", 100, "L2", 0, 1), Buffer("b", 100, "L1", 0, 1), Buffer("c", 50, "L2", 1, 2)]
    plan = plan_memory(buffers)
    assert list(plan.levels) == ["L2", "L1"]
    assert plan.levels["L2"].arena_bytes == 112 + 64 and plan.levels["L1"].arena_bytes == 112
    assert plan.offset("b") == ("L1", 0)


def test_greedy_places_largest_first_at_lowest_offset():
    from tvm_deeploy.plan.memory import _Block

    blocks = [_Block(["small"], 16, 0, 0), _Block(["big"], 64, 0, 1), _Block(["later"], 32, 2, 2)]
    assert greedy_by_size(blocks) == [64, 0, 0]


@pytest.mark.parametrize("bad", [Buffer("x", 4, "L1", 0, 0), Buffer("x", 4, "L2", 3, 2), Buffer("x", -1, "L2", 0, 0)])
def test_bad_buffers_are_refused(bad):
    with pytest.raises(ValueError):
        plan_level("L2", [bad])


def test_planner_switch_greedy_keeps_the_greedy_layout():
    buffers = [Buffer("b0", 64, "L2", 0, 2), Buffer("b1", 32, "L2", 0, 2), Buffer("b2", 80, "L2", 3, 3),
               Buffer("b3", 48, "L2", 2, 4)]
    plan = plan_level("L2", buffers, planner="greedy")
    assert (plan.method, plan.status, plan.arena_bytes) == ("greedy", "greedy only", 160)
    with pytest.raises(ValueError, match="unknown planner 'best'; planners are cpsat, greedy, tvm"):
        plan_level("L2", buffers, planner="best")


def test_tvm_planner_reuses_a_free_storage_of_the_same_dtype_within_the_size_range():
    """In program order: c takes a's storage (a is dead, same dtype); d (int8) gets its own; e (16x
    smaller than b, still in range) takes b's; f (int8) takes d's; g, larger than the free a/c storage,
    enlarges it. Storages lie in order of creation at their final sizes: a/c/g 96, b/e 256, d/f 48."""
    buffers = [Buffer("a", 64, "L2", 0, 1, "float32"), Buffer("b", 256, "L2", 0, 2, "float32"),
               Buffer("c", 48, "L2", 2, 3, "float32"), Buffer("d", 48, "L2", 2, 3, "int8"),
               Buffer("e", 16, "L2", 3, 4, "float32"), Buffer("f", 4, "L2", 4, 5, "int8"),
               Buffer("g", 96, "L2", 4, 5, "float32")]
    plan = plan_level("L2", buffers, planner="tvm")
    assert plan.offsets == {"a": 0, "b": 96, "c": 0, "d": 352, "e": 96, "f": 352, "g": 0}
    assert (plan.method, plan.status, plan.arena_bytes) == ("tvm", "tvm", 400)
    assert_valid(plan, buffers)


def test_tvm_planner_does_not_share_beyond_the_size_range():
    buffers = [Buffer("big", 16 * 16 * 2, "L2", 0, 0), Buffer("small", 16, "L2", 1, 1)]
    assert plan_level("L2", buffers, planner="tvm").offsets == {"big": 0, "small": 512}
