"""CP-SAT search for attention tiles under the L1 budget (applying tiling/attention.py's geometry and
policy.py's attention cost model), in the style of the GEMM tiler.

The choices are the head tile, a (query tile, key tile) pair and whether K and V are single-buffered.
What a pair costs along the key axis (fetched K/V rows, mask elements, steps, key visits: causal
skipping makes them depend on both tiles jointly) comes from the geometry as tables the model indexes
with element constraints; L1 bytes, DMA bytes and cycles are then products of table entries.
Candidate tile sizes are, per axis, the smallest size for each block count (tiling/attention.py).
A greedy choice (the least K/V traffic, then the fewest steps, then the most heads) is computed first;
cpsat.solve starts from it under a deterministic budget and falls back to it.
"""

from __future__ import annotations

from ortools.sat.python import cp_model

from ...offload.specs import AttentionSpec, summary
from ...targets.platforms import Platform
from .attention import ALIGN, LUT_BYTES, AttentionGeometry, candidates, geometry
from .cpsat import solve
from .plan import AttentionTiling, TilingError, check_nonzero
from .policy import DEFAULT_POLICY, TilingPolicy

MAX_HEAD_CANDIDATES = 64


def _check_fits(spec: AttentionSpec, geo: AttentionGeometry, platform: Platform) -> None:
    smallest = geo.l1_bytes(1, 1, 1, kv_slots=1)
    if smallest > platform.l1_bytes:
        raise TilingError(f"{summary(spec)}: no tiling fits L1 = {platform.l1_bytes} bytes; the smallest "
                          f"(one head, one query, one key, single-buffered K/V) needs {smallest} bytes of L1")
    row = max(spec.qk_dim, spec.v_dim) * geo.elem
    if row > platform.dma.max_transfer_bytes:
        raise TilingError(f"{summary(spec)}: one row of Q, K, V or O is {row} bytes, more than the DMA's "
                          f"largest transfer of {platform.dma.max_transfer_bytes} bytes")


class _Model:
    """A CP-SAT model with helpers for table lookups and products."""

    def __init__(self):
        self.m = cp_model.CpModel()

    def table(self, index, values, name):
        values = [int(v) for v in values]
        var = self.m.NewIntVar(min(values), max(values), name)
        self.m.AddElement(index, values, var)
        return var

    def columns(self, rows, names):
        """Variables constrained to be one of the rows of a table (a table constraint)."""
        columns = list(zip(*rows))
        variables = [self.m.NewIntVarFromDomain(cp_model.Domain.FromValues(sorted(set(int(v) for v in column))), name)
                     for column, name in zip(columns, names)]
        self.m.AddAllowedAssignments(variables, [tuple(int(v) for v in row) for row in rows])
        return variables

    def product(self, a, b, upper, name):
        out = self.m.NewIntVar(0, upper, name)
        self.m.AddMultiplicationEquality(out, [a, b])
        return out

    def aligned(self, nbytes, upper, name):
        units = self.m.NewIntVar(0, upper // ALIGN + 1, name)
        self.m.Add(ALIGN * units >= nbytes)
        self.m.Add(ALIGN * units <= nbytes + ALIGN - 1)
        return ALIGN * units

    def ceil_div(self, numerator, divisor: int, upper, name):
        q = self.m.NewIntVar(0, upper, name)
        self.m.Add(q * divisor >= numerator)
        self.m.Add(q * divisor <= numerator + divisor - 1)
        return q


def _fits_transfers(geo: AttentionGeometry, limit: int, tile_h: int, tile_q: int, tile_kv: int) -> bool:
    """Every block within one DMA transfer (the model's transfer constraints)."""
    row = max(geo.qk_dim, geo.v_dim) * geo.elem
    heads = geo.head_blocks(tile_h)
    return (tile_h * tile_q * row <= limit and heads.span_max * tile_kv * row <= limit
            and heads.mask_heads_max * geo.mask_block(tile_q, tile_kv) * 4 <= limit)


def _greedy(geo: AttentionGeometry, platform: Platform, heads: list[int], pairs, traffic) -> tuple[int, int, int, int]:
    """(tile_h, tile_q, tile_kv, K/V slots) that fit: the (query, key) pair with the least K/V traffic per
    head, then the fewest steps, double-buffered if any pair allows it; then the most heads that fit."""
    d, dv, l1, limit = geo.qk_dim, geo.v_dim, platform.l1_bytes, platform.dma.max_transfer_bytes
    order = sorted(range(len(pairs)), key=lambda i: (traffic[i].k_rows * d + traffic[i].v_rows * dv
                                                     + traffic[i].mask_elements, traffic[i].steps, i))
    for kv_slots in (2, 1):
        for i in order:
            tile_q, tile_kv = pairs[i]
            if geo.l1_bytes(1, tile_q, tile_kv, kv_slots) > l1 or not _fits_transfers(geo, limit, 1, tile_q, tile_kv):
                continue
            for tile_h in heads:  # largest first; 1 fits
                if geo.l1_bytes(tile_h, tile_q, tile_kv, kv_slots) <= l1 and _fits_transfers(geo, limit, tile_h,
                                                                                              tile_q, tile_kv):
                    return tile_h, tile_q, tile_kv, kv_slots
    raise AssertionError("_check_fits admits one head, one query and one key, single-buffered")


def tile_attention(spec: AttentionSpec, platform: Platform, policy: TilingPolicy = DEFAULT_POLICY) -> AttentionTiling:
    """The tiles with the fewest modelled cycles whose buffers fit L1."""
    check_nonzero(summary(spec), batch=spec.batch, heads=spec.heads, kv_heads=spec.kv_heads, q_len=spec.q_len,
                  kv_len=spec.kv_len, qk_dim=spec.qk_dim, v_dim=spec.v_dim)
    cores, dma, l1 = platform.cores, platform.dma, platform.l1_bytes
    geo = geometry(spec, cores)
    _check_fits(spec, geo, platform)
    d, dv, e = spec.qk_dim, spec.v_dim, geo.elem
    heads = list(range(spec.heads, 0, -1)) if spec.heads <= MAX_HEAD_CANDIDATES else candidates(spec.heads)
    head_blocks = [geo.head_blocks(h) for h in heads]
    smallest_rest = geo.l1_bytes(1, 1, 1, kv_slots=1)
    pairs, traffic = [], []
    for tq in candidates(spec.q_len):
        for tkv in candidates(spec.kv_len):
            if geo.l1_bytes(1, tq, tkv, kv_slots=1) <= l1:
                pairs.append((tq, tkv))
                traffic.append(geo.key_traffic(tq, tkv))
    assert pairs, smallest_rest  # (1, 1) fits, _check_fits said so

    costs = platform.cluster_costs
    key_cycles = costs.mac_cycles(spec.dtype, d + dv) + costs.exp_cycles(spec.dtype)
    first_pass_cycles = costs.mac_cycles(spec.dtype, d)
    greedy_h, greedy_q, greedy_kv, greedy_slots = _greedy(geo, platform, heads, pairs, traffic)
    bpc = dma.bytes_per_cycle
    batch = spec.batch

    md = _Model()
    m = md.m
    single = m.NewBoolVar("kv_single")
    head_rows = [(h, b.count, b.span_sum, b.span_max, b.mask_heads_sum, b.mask_heads_max)
                 for h, b in zip(heads, head_blocks)]
    th, hb, span_sum, span_max, mh_sum, mh_max = md.columns(
        head_rows, ("tile_h", "head_blocks", "span_sum", "span_max", "mask_heads_sum", "mask_heads_max"))
    pair_rows = [(p[0], p[1], geo.kv_bytes(t), t.mask_elements, geo.mask_block(*p), t.steps,
                  2 * t.row_tiles + t.k_fetches + t.v_fetches + t.mask_fetches,
                  (t.key_visits - t.first_pass_visits) * key_cycles + t.first_pass_visits * first_pass_cycles,
                  geo.dequantized_elements(t))
                 for p, t in zip(pairs, traffic)]
    tq, tkv, kv_head_bytes, mask_elems, mask_block, steps, transfers, row_cycles, dequantized = md.columns(
        pair_rows, ("tile_q", "tile_kv", "kv_head_bytes", "mask_elements", "mask_block", "steps", "transfers",
                    "row_cycles", "dequantized"))

    # L1: the buffers of tiling/attention.py's layout.
    H, Q, KV = spec.heads, spec.q_len, spec.kv_len
    rows = md.product(th, tq, H * Q, "tile_rows")
    kv_rows = md.product(span_max, tkv, spec.kv_heads * KV, "kv_block_rows")
    q_slot = md.aligned(rows * (d * e), H * Q * d * e, "q_slot")
    k_slot = md.aligned(kv_rows * (d * geo.k_elem), spec.kv_heads * KV * d * e, "k_slot")
    v_slot = md.aligned(kv_rows * (dv * geo.v_elem), spec.kv_heads * KV * dv * e, "v_slot")
    # int8 K/V: one float32 buffer each that the fetched blocks are dequantized into
    k_f32 = md.aligned(kv_rows * (d * 4), spec.kv_heads * KV * d * 4, "k_f32") if geo.int8_kv[0] else 0
    v_f32 = md.aligned(kv_rows * (dv * 4), spec.kv_heads * KV * dv * 4, "v_f32") if geo.int8_kv[1] else 0
    mask_elements_max = max(h.mask_heads_max for h in head_blocks) * max(geo.mask_block(*p) for p in pairs)
    mask_slot_elems = md.product(mh_max, mask_block, mask_elements_max, "mask_block_elements")
    m_slot = md.aligned(mask_slot_elems * 4, mask_elements_max * 4, "mask_slot")
    o_slot = md.aligned(rows * (dv * e), H * Q * dv * e, "o_slot")
    state = md.aligned(rows * (geo.state_words * 4), H * Q * geo.state_words * 4, "state")
    score_words = m.NewIntVar(2, max(2, geo.score_rows * KV), "core_score_words")
    m.AddMaxEquality(score_words, [tkv * geo.score_rows, 2])
    scores = md.aligned(score_words * (cores * 4), cores * max(2, geo.score_rows * KV) * 4, "scores")
    kv_upper = 2 * (spec.kv_heads * KV * (d + dv) * e + 2 * ALIGN)
    kv_l1 = m.NewIntVar(0, kv_upper, "kv_l1")
    m.Add(kv_l1 == k_slot + v_slot).OnlyEnforceIf(single)
    m.Add(kv_l1 == 2 * (k_slot + v_slot)).OnlyEnforceIf(single.Not())
    lut = LUT_BYTES if spec.dtype == "int8" else 0
    m.Add(2 * q_slot + kv_l1 + k_f32 + v_f32 + 2 * m_slot * (geo.mask is not None) + 2 * o_slot + state + scores
          + lut <= l1)
    limit = dma.max_transfer_bytes
    m.Add(rows * (max(d, dv) * e) <= limit)
    m.Add(kv_rows * (max(d, dv) * e) <= limit)
    m.Add(mask_slot_elems * 4 <= limit)

    # DMA: Q and O once, K/V and mask per the key tables, scaled to cycles * bytes_per_cycle.
    fixed_bytes = batch * H * Q * (d + dv) * e + lut
    kv_upper_bytes = max(h.span_sum for h in head_blocks) * max(geo.kv_bytes(t) for t in traffic)
    kv_bytes = md.product(span_sum, kv_head_bytes, kv_upper_bytes, "kv_traffic")
    mask_upper = max(h.mask_heads_sum for h in head_blocks) * max(t.mask_elements for t in traffic)
    mask_bytes = md.product(mh_sum, mask_elems, mask_upper, "mask_traffic")
    dma_bytes = fixed_bytes + batch * kv_bytes + batch * 4 * mask_bytes
    transfer_upper = max(h.count for h in head_blocks) * max(2 * t.row_tiles + t.k_fetches + t.v_fetches
                                                             + t.mask_fetches for t in traffic)
    all_transfers = md.product(hb, transfers, transfer_upper, "all_transfers")
    setup = dma.setup_cycles * bpc
    dma_scaled = dma_bytes + batch * setup * all_transfers

    # Compute: the busiest core's rows of a tile times the key cycles of every step.
    rows_per_core = md.ceil_div(rows, cores, H * Q, "rows_per_core")
    block_rows = md.product(hb, rows_per_core, H * H * Q, "head_block_rows")
    cycles_upper = H * H * Q * max(t.key_visits for t in traffic) * key_cycles
    compute = md.product(block_rows, row_cycles, cycles_upper, "row_cycles_total")
    # int8 K/V: every fetched element dequantized once, the cores sharing each block
    dequantize_upper = max(h.span_sum for h in head_blocks) * max(geo.dequantized_elements(t) for t in traffic)
    dequantize_milli = md.product(span_sum, dequantized, dequantize_upper, "dequantized_elements") \
        * costs.dequantize_milli_cycles
    cycles_upper += dequantize_upper * costs.dequantize_milli_cycles // 1000 + 1
    compute = compute + md.ceil_div(dequantize_milli, 1000 * cores, cycles_upper, "dequantize_cycles")
    all_steps = md.product(hb, steps, max(h.count for h in head_blocks) * max(t.steps for t in traffic), "all_steps")
    dma_upper = fixed_bytes + batch * kv_upper_bytes + batch * 4 * mask_upper + batch * setup * transfer_upper
    busiest = m.NewIntVar(0, max(dma_upper, batch * bpc * cycles_upper), "overlapped")
    m.AddMaxEquality(busiest, [dma_scaled, compute * (batch * bpc)])
    exposed = m.NewIntVar(0, batch * kv_upper_bytes, "kv_exposed")
    m.Add(exposed == batch * kv_bytes).OnlyEnforceIf(single)
    m.Add(exposed == 0).OnlyEnforceIf(single.Not())
    m.Minimize(busiest + exposed + all_steps * (batch * costs.attention_step_cycles * bpc)
               + dma_bytes * (policy.dma_byte_weight * bpc))

    greedy = {th: greedy_h, tq: greedy_q, tkv: greedy_kv, single: greedy_slots == 1}
    solver, status, seconds = solve(m, greedy, platform.tiler, policy, summary(spec))
    tile_h, tile_q, tile_kv = solver.Value(th), solver.Value(tq), solver.Value(tkv)
    return plan_attention(geo, tile_h, tile_q, tile_kv, 1 if solver.Value(single) else 2, cores,
                          round(solver.ObjectiveValue() / bpc), status, seconds)


def plan_attention(geo: AttentionGeometry, tile_h: int, tile_q: int, tile_kv: int, kv_slots: int, cores: int,
                   cycles: int = 0, status: str = "given", seconds: float = 0.0) -> AttentionTiling:
    """The plan of given tiles: the L1 layout and the traffic the geometry predicts."""
    layout = geo.layout(tile_h, tile_q, tile_kv, kv_slots)
    into, out = geo.dma_bytes(tile_h, tile_q, tile_kv)
    tiles, steps = geo.counts(tile_h, tile_q, tile_kv)
    return AttentionTiling(tile_h, tile_q, tile_kv, tiles, steps, cores, layout["q"], layout["k"], layout["v"],
                           layout["mask"], layout["o"], layout["state"][0], layout["scores"][0], layout["lut"][0],
                           layout["end"][0], into, out, geo.lower_bound, cycles, status, seconds,
                           layout["k_f32"][0], layout["v_f32"][0])
