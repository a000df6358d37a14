"""CP-SAT search for GEMM tile sizes under the L1 budget, for the cluster or the NPU.

A greedy choice (the least DMA traffic among candidate tile sizes, then the fewest tiles) is computed
first; cpsat.solve starts from it under a deterministic budget and falls back to it, so a tiling is
found whenever one exists and the same input gives the same tiling at any machine load. Costs are integers in units of
1/(1000 * DMA bytes per cycle) cycles, so that every term of the policy's model stays exact.
"""

from __future__ import annotations

import math

from ortools.sat.python import cp_model

from ...offload.specs import GemmSpec, summary
from ...targets.platforms import Platform
from .attention import candidates
from .cpsat import solve
from .gemm import ALIGN, GemmGeometry, geometry
from .plan import GemmTiling, TilingError, check_nonzero
from .policy import DEFAULT_POLICY, TilingPolicy

ENGINES = ("cluster", "npu")


def _ceil_div(model, numerator, divisor, upper, name, divisor_upper=None):
    """A variable equal to ceil(numerator / divisor) for a positive numerator; the divisor is a
    constant, or an int variable whose largest value is divisor_upper."""
    quotient = model.NewIntVar(1, upper, name)
    if isinstance(divisor, int):
        product = quotient * divisor
    else:
        product = model.NewIntVar(0, upper * divisor_upper, name + "_x")
        model.AddMultiplicationEquality(product, [quotient, divisor])
    model.Add(product >= numerator)
    model.Add(product - divisor <= numerator - 1)
    return quotient


def _product(model, a, b, upper, name):
    out = model.NewIntVar(0, upper, name)
    model.AddMultiplicationEquality(out, [a, b])
    return out


def _aligned_bytes(model, nbytes, upper, name):
    """A variable equal to nbytes rounded up to the slot alignment."""
    units = model.NewIntVar(0, upper // ALIGN + 1, name)
    model.Add(ALIGN * units >= nbytes)
    model.Add(ALIGN * units <= nbytes + ALIGN - 1)
    return ALIGN * units


def _slots_bytes(model, slot, single, upper, name):
    """L1 bytes of an operand's slots: one slot if `single`, else two."""
    total = model.NewIntVar(0, 2 * (upper + ALIGN), name)
    model.Add(total == slot).OnlyEnforceIf(single)
    model.Add(total == 2 * slot).OnlyEnforceIf(single.Not())
    return total


def _if(model, condition, value, upper, name):
    """`value` when the boolean `condition` holds, else 0."""
    out = model.NewIntVar(0, upper, name)
    model.Add(out == value).OnlyEnforceIf(condition)
    model.Add(out == 0).OnlyEnforceIf(condition.Not())
    return out


def _column_group(geo: GemmGeometry, platform: Platform, engine: str) -> int:
    """Column blocks are whole groups of this many columns (or all columns): the NPU's channel groups, the
    panels of a lane-packed B, else single columns."""
    return platform.npu_costs.channel_group if engine == "npu" else geo.b_panel


def _smallest_tile_n(geo: GemmGeometry, platform: Platform, engine: str) -> int:
    return min(_column_group(geo, platform, engine), geo.n)


def _check_fits(spec: GemmSpec, geo: GemmGeometry, platform: Platform, engine: str) -> None:
    tile_n = _smallest_tile_n(geo, platform, engine)
    smallest = geo.l1_bytes(1, tile_n, a_slots=1, b_slots=0 if geo.weights_resident else 1)
    where = " on the NPU" if engine == "npu" else ""
    if smallest > platform.l1_bytes:
        raise TilingError(f"{summary(spec)}{where}: no tiling fits L1 = {platform.l1_bytes} bytes; the smallest "
                          f"(1x{tile_n} output tiles, single-buffered operands, whole reduction) needs {smallest} "
                          f"bytes of L1")
    largest_block = max(geo.k * geo.a_elem, geo.b_bytes(tile_n))
    if largest_block > platform.dma.max_transfer_bytes:
        raise TilingError(f"{summary(spec)}{where}: one row of A or column of B is {largest_block} bytes, more "
                          f"than the DMA's largest transfer of {platform.dma.max_transfer_bytes} bytes")


def tile_gemm(spec: GemmSpec, platform: Platform, engine: str = "cluster",
              policy: TilingPolicy = DEFAULT_POLICY, b_lanes_chunk: int = 0) -> GemmTiling:
    """The tile sizes with the lowest modelled cost whose tiles fit L1, for `engine`; on the cluster with a
    B packed in lane words when b_lanes_chunk > 0 (plan/lanes.py)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; engines are {', '.join(ENGINES)}")
    check_nonzero(summary(spec), batch=math.prod(spec.batch), m=spec.m, n=spec.n, k=spec.k)
    geo = geometry(spec, engine, b_lanes=b_lanes_chunk > 0)
    _check_fits(spec, geo, platform, engine)
    greedy_m, greedy_n, greedy_a_slots, greedy_b_slots = _greedy(geo, platform, engine)
    m, n, k, batch = geo.m, geo.n, geo.k, geo.batch
    cores, dma, l1 = platform.cores, platform.dma, platform.l1_bytes
    per_cycle = 1000 * dma.bytes_per_cycle  # cost units per cycle
    model = cp_model.CpModel()
    tile_m, tile_n = model.NewIntVar(1, m, "tile_m"), model.NewIntVar(1, n, "tile_n")
    row_blocks = _ceil_div(model, m, tile_m, m, "row_blocks", divisor_upper=m)
    col_blocks = _ceil_div(model, n, tile_n, n, "col_blocks", divisor_upper=n)
    tiles = _product(model, row_blocks, col_blocks, m * n, "tiles")
    tile_elems = _product(model, tile_m, tile_n, m * n, "tile_elems")

    # L1: one or two slots per streamed operand, two for the output, each within one DMA transfer.
    panel = geo.b_panel
    b_panels = tile_n if panel == 1 else _ceil_div(model, tile_n, panel, -(-n // panel), "b_panels")
    b_block, b_whole = b_panels * (k * geo.b_panel_bytes), geo.b_bytes(n)
    a_slot = _aligned_bytes(model, tile_m * (k * geo.a_elem), m * k * geo.a_elem, "a_slot")
    b_slot = _aligned_bytes(model, b_block, b_whole, "b_slot")
    y_slot = _aligned_bytes(model, tile_elems * geo.y_elem, m * n * geo.y_elem, "y_slot")
    a_single, b_single = model.NewBoolVar("a_single"), model.NewBoolVar("b_single")
    a_l1 = _slots_bytes(model, a_slot, a_single, m * k * geo.a_elem, "a_l1")
    b_l1 = _slots_bytes(model, b_slot, b_single, b_whole, "b_l1")
    model.Add(a_l1 + b_l1 + 2 * y_slot <= l1)
    model.Add(tile_m * (k * geo.a_elem) <= dma.max_transfer_bytes)
    model.Add(b_block <= dma.max_transfer_bytes)
    model.Add(tile_elems * geo.y_elem <= dma.max_transfer_bytes)
    group = _column_group(geo, platform, engine)
    if group > 1:
        # Column blocks start on whole groups (the packed weights' layout), unless one covers all n.
        all_columns = model.NewBoolVar("all_columns")
        model.Add(tile_n == n).OnlyEnforceIf(all_columns)
        groups = model.NewIntVar(1, -(-n // group), "column_groups")
        model.Add(tile_n == group * groups).OnlyEnforceIf(all_columns.Not())
    if engine == "npu":
        model.Add(b_single == 1)  # no B slots at all: b_l1 is 0 either way

    # DMA traffic and transfer count of the schedule (see gemm.GemmGeometry.dma_bytes).
    one_row_block, one_col_block = model.NewBoolVar("one_row_block"), model.NewBoolVar("one_col_block")
    model.Add(row_blocks == 1).OnlyEnforceIf(one_row_block)
    model.Add(row_blocks >= 2).OnlyEnforceIf(one_row_block.Not())
    model.Add(col_blocks == 1).OnlyEnforceIf(one_col_block)
    model.Add(col_blocks >= 2).OnlyEnforceIf(one_col_block.Not())
    a_bytes = batch * m * k * geo.a_elem + (geo.a_runs - batch) * m * k * geo.a_elem * one_row_block
    a_transfers = model.NewIntVar(0, batch * m, "a_transfers")
    model.Add(a_transfers == geo.a_runs).OnlyEnforceIf(one_row_block)
    model.Add(a_transfers == batch * row_blocks).OnlyEnforceIf(one_row_block.Not())
    b_fetches = model.NewIntVar(0, batch * m, "b_whole_fetches")
    b_transfers = model.NewIntVar(0, batch * m * n, "b_transfers")
    if engine == "npu":
        model.Add(b_fetches == 0)
        model.Add(b_transfers == 0)
    else:
        model.Add(b_fetches == geo.b_runs).OnlyEnforceIf(one_col_block)
        model.Add(b_fetches == batch * row_blocks).OnlyEnforceIf(one_col_block.Not())
        model.Add(b_transfers == geo.b_runs).OnlyEnforceIf(one_col_block)
        model.Add(b_transfers == batch * tiles).OnlyEnforceIf(one_col_block.Not())
    b_bytes = b_fetches * b_whole
    dma_bytes = a_bytes + b_bytes + batch * m * n * geo.y_elem
    setup = dma.setup_cycles * per_cycle
    a_dma = a_bytes * 1000 + a_transfers * setup
    b_dma = b_bytes * 1000 + b_transfers * setup
    dma_cost = a_dma + b_dma + (batch * m * n * geo.y_elem) * 1000 + batch * tiles * setup

    compute_cost, compute_upper = _compute_cost(model, engine, platform, spec.dtype, geo, tile_m, tile_n,
                                                tile_elems, tiles, per_cycle)
    dma_upper = (batch * (m * k * geo.a_elem + m * b_whole + m * n * geo.y_elem) * 1000
                 + batch * (m + 2 * m * n) * setup)
    overlapped = model.NewIntVar(0, max(dma_upper, compute_upper), "overlapped")
    model.AddMaxEquality(overlapped, [dma_cost, compute_cost])
    # A single-buffered operand's fetches do not overlap compute.
    exposed = _if(model, a_single, a_dma, dma_upper, "a_exposed")
    if engine == "cluster":
        exposed += _if(model, b_single, b_dma, dma_upper, "b_exposed")
    overhead = (platform.cluster_costs.tile_overhead_cycles if engine == "cluster"
                else platform.npu_costs.job_cycles) * per_cycle
    model.Minimize(overlapped + exposed + batch * tiles * overhead
                   + dma_bytes * (policy.dma_byte_weight * per_cycle))

    greedy = {tile_m: greedy_m, tile_n: greedy_n, a_single: greedy_a_slots == 1, b_single: greedy_b_slots <= 1}
    solver, status, seconds = solve(model, greedy, platform.tiler, policy, summary(spec))
    cycles = (solver.Value(overlapped) + solver.Value(exposed) + batch * solver.Value(tiles) * overhead) / per_cycle
    b_slots = 0 if engine == "npu" else 1 + (not solver.Value(b_single))
    return _plan(geo, engine, solver.Value(tile_m), solver.Value(tile_n), 1 + (not solver.Value(a_single)),
                 b_slots, cores, cycles, status, seconds, b_lanes_chunk)


def _greedy(geo: GemmGeometry, platform: Platform, engine: str) -> tuple[int, int, int, int]:
    """(tile_m, tile_n, A slots, B slots) that fit: among candidate tile sizes and buffering, the least
    DMA traffic, then the fewest tiles, double-buffered first. (1, smallest tile_n) single-buffered fits
    (_check_fits), so there is always one."""
    m, n, k, dma = geo.m, geo.n, geo.k, platform.dma
    group = _column_group(geo, platform, engine)
    columns = candidates(n)
    if group > 1:
        columns = sorted({n} | {group * g for g in candidates(-(-n // group)) if group * g <= n}, reverse=True)
    buffering = ((2, 0), (1, 0)) if engine == "npu" else ((2, 2), (1, 2), (2, 1), (1, 1))
    best, choice = None, None
    for tile_m in candidates(m):
        if tile_m * k * geo.a_elem > dma.max_transfer_bytes:
            continue
        for tile_n in columns:
            largest = max(geo.b_bytes(tile_n), tile_m * tile_n * geo.y_elem)
            if largest > dma.max_transfer_bytes:
                continue
            for rank, (a_slots, b_slots) in enumerate(buffering):
                if geo.l1_bytes(tile_m, tile_n, a_slots, b_slots) <= platform.l1_bytes:
                    key = (sum(geo.dma_bytes(tile_m, tile_n)), math.ceil(m / tile_m) * math.ceil(n / tile_n), rank)
                    if best is None or key < best:
                        best, choice = key, (tile_m, tile_n, a_slots, b_slots)
                    break
    assert choice is not None, "_check_fits admits the smallest tiling"
    return choice


def _compute_cost(model, engine, platform, dtype, geo, tile_m, tile_n, tile_elems, tiles, per_cycle):
    """(cost of computing every tile, its upper bound) for the engine."""
    m, n, k, batch = geo.m, geo.n, geo.k, geo.batch
    if engine == "npu":
        # MACs with the output channels padded to whole groups, at the NPU's rate.
        group = platform.npu_costs.channel_group
        padded_n = _ceil_div(model, tile_n, group, -(-n // group), "tile_groups")
        padded = _product(model, tile_m, padded_n, m * -(-n // group), "padded_outputs")
        total = _product(model, tiles, padded, m * n * m * -(-n // group), "npu_outputs")
        upper = (m * n) * (m * n + group * m) * batch * k * per_cycle // platform.npu_costs.macs_per_cycle + 1
        cost = model.NewIntVar(0, upper, "npu_compute")
        model.Add(cost * platform.npu_costs.macs_per_cycle >= total * (group * batch * k * per_cycle))
        return cost, upper
    # Cluster: the busiest core of a tile, rows split over cores (columns when that is better).
    cores = platform.cores
    rows_per_core = _ceil_div(model, tile_m, cores, m, "rows_per_core")
    cols_per_core = _ceil_div(model, tile_n, cores, n, "cols_per_core")
    work = model.NewIntVar(1, m * n, "busiest_core_outputs")
    model.AddMinEquality(work, [_product(model, rows_per_core, tile_n, m * n, "row_split"),
                                _product(model, tile_m, cols_per_core, m * n, "col_split")])
    total_work = _product(model, tiles, work, (m * n) ** 2, "total_work")
    kind = "int8_lanes" if geo.b_lanes else dtype
    scale = batch * k * platform.cluster_costs.mac_milli_cycles(kind) * platform.dma.bytes_per_cycle
    return total_work * scale, (m * n) ** 2 * scale


def _plan(geo: GemmGeometry, engine: str, tile_m: int, tile_n: int, a_slots: int, b_slots: int, cores: int,
          cycles: float, status: str, seconds: float, b_lanes_chunk: int = 0) -> GemmTiling:
    a_slot, b_slot, y_slot = geo.slot_bytes(tile_m, tile_n)
    offsets, end = {}, 0
    for name, size, count in (("a", a_slot, a_slots), ("b", b_slot, b_slots), ("y", y_slot, 2)):
        starts = [end + i * size for i in range(max(count, 1))]
        offsets[name] = (starts[0], starts[-1])
        end += count * size
    into_l1, out_of_l1 = geo.dma_bytes(tile_m, tile_n)
    tiles = math.ceil(geo.m / tile_m) * math.ceil(geo.n / tile_n) * geo.batch
    return GemmTiling(engine, tile_m, tile_n, tiles, cores, offsets["a"], offsets["b"], offsets["y"], end,
                      into_l1, out_of_l1, geo.lower_bound, round(cycles), status, seconds, b_lanes_chunk)
