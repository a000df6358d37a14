"""CP-SAT search for GEMM tile sizes under the L1 budget (applying geometry and policy).

Deterministic: one search worker and a fixed seed. Bounded: the policy's time limit per op; on a
time-out the best tiling found is used and the status says so.
"""

from __future__ import annotations

import math
import time

from ortools.sat.python import cp_model

from ..platforms import Platform
from ..specs import GemmSpec, summary
from .gemm import ALIGN, GemmGeometry, geometry
from .plan import GemmTiling, TilingError
from .policy import DEFAULT_POLICY, TilingPolicy


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


def _exposed(model, cost, single, upper, name):
    """`cost` when the operand is single-buffered (its transfers are not hidden), else 0."""
    exposed = model.NewIntVar(0, upper, name)
    model.Add(exposed == cost).OnlyEnforceIf(single)
    model.Add(exposed == 0).OnlyEnforceIf(single.Not())
    return exposed


def _check_fits(spec: GemmSpec, geo: GemmGeometry, platform: Platform) -> None:
    smallest = geo.l1_bytes(1, 1, a_slots=1, b_slots=1)
    if smallest > platform.l1_bytes:
        raise TilingError(f"{summary(spec)}: no tiling fits L1 = {platform.l1_bytes} bytes; the smallest "
                          f"(1x1 output tiles, single-buffered operands, whole reduction) needs {smallest} "
                          f"bytes of L1")
    largest_block = max(geo.k * geo.a_elem, geo.k * geo.b_elem)
    if largest_block > platform.dma.max_transfer_bytes:
        raise TilingError(f"{summary(spec)}: one row of A or column of B is {largest_block} bytes, more than "
                          f"the DMA's largest transfer of {platform.dma.max_transfer_bytes} bytes")


def tile_gemm(spec: GemmSpec, platform: Platform, policy: TilingPolicy = DEFAULT_POLICY) -> GemmTiling:
    """The tile sizes with the fewest modelled cycles whose double-buffered tiles fit L1."""
    geo = geometry(spec)
    _check_fits(spec, geo, platform)
    m, n, k, batch = geo.m, geo.n, geo.k, geo.batch
    cores, dma, l1 = platform.cores, platform.dma, platform.l1_bytes
    model = cp_model.CpModel()
    tile_m, tile_n = model.NewIntVar(1, m, "tile_m"), model.NewIntVar(1, n, "tile_n")
    row_blocks = _ceil_div(model, m, tile_m, m, "row_blocks", divisor_upper=m)
    col_blocks = _ceil_div(model, n, tile_n, n, "col_blocks", divisor_upper=n)
    tiles = _product(model, row_blocks, col_blocks, m * n, "tiles")
    tile_elems = _product(model, tile_m, tile_n, m * n, "tile_elems")

    # L1: one or two slots per operand, two for the output, each within one DMA transfer.
    a_slot = _aligned_bytes(model, tile_m * (k * geo.a_elem), m * k * geo.a_elem, "a_slot")
    b_slot = _aligned_bytes(model, tile_n * (k * geo.b_elem), n * k * geo.b_elem, "b_slot")
    y_slot = _aligned_bytes(model, tile_elems * geo.y_elem, m * n * geo.y_elem, "y_slot")
    a_single, b_single = model.NewBoolVar("a_single"), model.NewBoolVar("b_single")
    a_l1 = _slots_bytes(model, a_slot, a_single, m * k * geo.a_elem, "a_l1")
    b_l1 = _slots_bytes(model, b_slot, b_single, n * k * geo.b_elem, "b_l1")
    model.Add(a_l1 + b_l1 + 2 * y_slot <= l1)
    for slot in (a_slot, b_slot, y_slot):
        model.Add(slot <= dma.max_transfer_bytes + ALIGN - 1)
    model.Add(tile_m * (k * geo.a_elem) <= dma.max_transfer_bytes)
    model.Add(tile_n * (k * geo.b_elem) <= dma.max_transfer_bytes)
    model.Add(tile_elems * geo.y_elem <= dma.max_transfer_bytes)

    # DMA traffic and transfer count of the schedule (see gemm.GemmGeometry.dma_bytes).
    one_row_block, one_col_block = model.NewBoolVar("one_row_block"), model.NewBoolVar("one_col_block")
    model.Add(row_blocks == 1).OnlyEnforceIf(one_row_block)
    model.Add(row_blocks >= 2).OnlyEnforceIf(one_row_block.Not())
    model.Add(col_blocks == 1).OnlyEnforceIf(one_col_block)
    model.Add(col_blocks >= 2).OnlyEnforceIf(one_col_block.Not())
    b_fetches = model.NewIntVar(0, batch * m, "b_whole_fetches")
    model.Add(b_fetches == geo.b_runs).OnlyEnforceIf(one_col_block)
    model.Add(b_fetches == batch * row_blocks).OnlyEnforceIf(one_col_block.Not())
    a_bytes = batch * m * k * geo.a_elem + (geo.a_runs - batch) * m * k * geo.a_elem * one_row_block
    b_bytes = b_fetches * (k * n * geo.b_elem)
    dma_bytes = a_bytes + b_bytes + batch * m * n * geo.y_elem
    a_transfers = model.NewIntVar(0, batch * m, "a_transfers")
    model.Add(a_transfers == geo.a_runs).OnlyEnforceIf(one_row_block)
    model.Add(a_transfers == batch * row_blocks).OnlyEnforceIf(one_row_block.Not())
    b_transfers = model.NewIntVar(0, batch * m * n, "b_transfers")
    model.Add(b_transfers == geo.b_runs).OnlyEnforceIf(one_col_block)
    model.Add(b_transfers == batch * tiles).OnlyEnforceIf(one_col_block.Not())
    transfers = a_transfers + b_transfers + batch * tiles
    dma_scaled = dma_bytes + transfers * (dma.setup_cycles * dma.bytes_per_cycle)

    # Compute: the busiest core of a tile, rows split over cores (columns when that is better).
    rows_per_core = _ceil_div(model, tile_m, cores, m, "rows_per_core")
    cols_per_core = _ceil_div(model, tile_n, cores, n, "cols_per_core")
    work = model.NewIntVar(1, m * n, "busiest_core_outputs")
    model.AddMinEquality(work, [_product(model, rows_per_core, tile_n, m * n, "row_split"),
                                _product(model, tile_m, cols_per_core, m * n, "col_split")])
    total_work = _product(model, tiles, work, (m * n) ** 2, "total_work")
    compute_scaled = total_work * (batch * k * policy.mac_cycles(spec.dtype) * dma.bytes_per_cycle)
    dma_upper = (batch * (m * k * geo.a_elem + m * k * n * geo.b_elem + m * n * geo.y_elem)
                 + batch * (m + 2 * m * n) * dma.setup_cycles * dma.bytes_per_cycle)
    compute_upper = (m * n) ** 2 * batch * k * policy.mac_cycles(spec.dtype) * dma.bytes_per_cycle
    busiest = model.NewIntVar(0, max(dma_upper, compute_upper), "overlapped_cycles")
    model.AddMaxEquality(busiest, [dma_scaled, compute_scaled])
    # A single-buffered operand's fetches do not overlap compute.
    setup = dma.setup_cycles * dma.bytes_per_cycle
    exposed = [_exposed(model, a_bytes + a_transfers * setup, a_single, dma_upper, "a_exposed"),
               _exposed(model, b_bytes + b_transfers * setup, b_single, dma_upper, "b_exposed")]
    model.Minimize(busiest + sum(exposed) + tiles * (batch * policy.tile_overhead_cycles * dma.bytes_per_cycle)
                   + dma_bytes * (policy.dma_byte_weight * dma.bytes_per_cycle))

    solver = cp_model.CpSolver()
    solver.parameters.num_search_workers = 1
    solver.parameters.random_seed = policy.seed
    solver.parameters.max_time_in_seconds = policy.seconds
    start = time.perf_counter()
    status = solver.Solve(model)
    seconds = time.perf_counter() - start
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise TilingError(f"{summary(spec)}: the tiler found no tiling within {policy.seconds} s "
                          f"(solver status {solver.StatusName(status)})")
    return _plan(geo, solver.Value(tile_m), solver.Value(tile_n), 1 + (not solver.Value(a_single)),
                 1 + (not solver.Value(b_single)), cores, solver.ObjectiveValue() / dma.bytes_per_cycle,
                 "optimal" if status == cp_model.OPTIMAL else "feasible (time limit)", seconds)


def _plan(geo: GemmGeometry, tile_m: int, tile_n: int, a_slots: int, b_slots: int, cores: int,
          cycles: float, status: str, seconds: float) -> GemmTiling:
    a_slot, b_slot, y_slot = geo.slot_bytes(tile_m, tile_n)
    offsets, end = {}, 0
    for name, size, count in (("a", a_slot, a_slots), ("b", b_slot, b_slots), ("y", y_slot, 2)):
        starts = [end + i * size for i in range(count)]
        offsets[name] = (starts[0], starts[-1])
        end += count * size
    into_l1, out_of_l1 = geo.dma_bytes(tile_m, tile_n)
    tiles = math.ceil(geo.m / tile_m) * math.ceil(geo.n / tile_n) * geo.batch
    return GemmTiling(tile_m, tile_n, tiles, cores, offsets["a"], offsets["b"], offsets["y"], end, into_l1,
                      out_of_l1, geo.lower_bound, round(cycles), status, seconds)
