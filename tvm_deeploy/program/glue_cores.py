"""TVM's glue on all cluster cores: a PrimFunc whose loop nest is data-parallel is rewritten so that each core
runs a contiguous share of its outer loop, and the network forks its call over the cores (project.py).

A pass of our own rather than `TVMBackendParallelLaunch` on the HAL: TVM's C backend (target "c") prints a
`parallel` loop as a plain serial loop and never calls TVMBackendParallelLaunch (only the LLVM backend
outlines parallel loops into closures), so there would be nothing for the HAL to run.

What is split, so that every value is computed by the same C expression as in the 1-hart build (bit-identical
results): element-wise producers are first inlined into their consumers (`compute_inline` substitutes the
producer's expression; storing a float32 and loading it back changes nothing); then the function must be one
loop nest without intermediate buffers (each core would have its own copy on its stack); the longest prefix of
its perfectly nested loops that TVM's own `parallel` check accepts once fused (every block binds those loops to
data-parallel iterators only: no core reads what another writes) is split, when it has at least
`MIN_ITERATIONS_PER_CORE` iterations per core (a fork costs more than a few iterations). Core c runs iterations
[n * c / cores, n * (c + 1) / cores). Everything else (norms, reductions over the outer axis, TIR without
TensorIR blocks such as `lm.llama.kv_write`) stays on the calling core.
"""

from __future__ import annotations

from tvm import s_tir, tirx

CORE_ID = "dpl_core_id"  # dpl_hal.h: this core's index inside a fork
MIN_ITERATIONS_PER_CORE = 2


def split_by_core(func: tirx.PrimFunc, cores: int) -> tirx.PrimFunc | None:
    """`func` with its outer loop split by core for a fork over `cores` cores, or None when it stays serial."""
    # TensorIR with TVM's "root" block only (hand-written TIR, e.g. an opaque block around the loops, stays)
    if cores < 2 or not isinstance(func.body, s_tir.SBlockRealize) or func.body.block.name_hint != "root":
        return None
    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    if not blocks:
        return None  # loops without blocks: nothing TVM's checks can vouch for
    for block in blocks[:-1]:
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            pass  # not element-wise, or read by several blocks: stays, and the function with it
    realize = sch.mod["main"].body
    depth, loop = 0, realize.block.body
    if realize.block.alloc_buffers or not isinstance(loop, tirx.For):
        return None
    while isinstance(loop, tirx.For):
        depth, loop = depth + 1, loop.body
    for fused_depth in range(depth, 0, -1):
        trial = sch.copy()
        loops = trial.get_loops(trial.get_child_blocks(trial.get_sblock("root"))[0])[:fused_depth]
        try:
            outer = trial.fuse(*loops) if fused_depth > 1 else loops[0]
            trial.parallel(outer)
        except s_tir.ScheduleError:
            continue
        extent = trial.get(outer).extent
        if not isinstance(extent, tirx.IntImm) or extent.value < MIN_ITERATIONS_PER_CORE * cores:
            return None
        return _chunked(trial.mod["main"], cores)
    return None


def _chunked(func: tirx.PrimFunc, cores: int) -> tirx.PrimFunc:
    """The root block's parallel loop over [0, n) as a serial loop over this core's chunk."""
    realize = func.body
    block, loop = realize.block, realize.block.body
    dtype = str(loop.loop_var.ty)
    core, start, end = tirx.Var("core", dtype), tirx.Var("chunk_start", dtype), tirx.Var("chunk_end", dtype)
    n, count = loop.extent, tirx.const(cores, dtype)
    body = tirx.SeqStmt([
        tirx.Bind(core, tirx.Cast(dtype, tirx.call_extern("int32", CORE_ID))),
        tirx.Bind(start, tirx.floordiv(n * core, count)),
        tirx.Bind(end, tirx.floordiv(n * (core + 1), count)),
        tirx.For(loop.loop_var, start, end - start, tirx.ForKind.SERIAL, loop.body, annotations=loop.annotations),
    ])
    split = s_tir.SBlock(block.iter_vars, block.reads, block.writes, block.name_hint, body, block.init,
                         block.alloc_buffers, block.match_buffers, block.annotations)
    return func.with_body(s_tir.SBlockRealize(realize.iter_values, realize.predicate, split))
