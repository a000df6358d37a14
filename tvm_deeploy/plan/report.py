"""`compile_report`: what the deeploy codegen will do with a module, without building it."""

from __future__ import annotations

import collections

import tvm
from tvm import relax

from ..offload.functions import offloaded_functions
from ..offload.partition import partition_for_deeploy
from .offloads import plan_offloads, planned_functions


def compile_report(mod: tvm.IRModule, target: tvm.target.Target | str = "deeploy") -> dict:
    """One entry per offloaded function: op, summary, operand shapes and dtypes, `call_sites` (the
    partitioner shares one function among identical ops: a Llama's layers call each attention function
    once per layer), then exactly its "deeploy.plan" attribute (engine, every engine's modelled cycles,
    tile, L1 bytes, DMA bytes against their lower bound, solver status, the full tiling). Raises
    TilingError (or WeightMemoryError) like the build would."""
    planned = plan_offloads(partition_for_deeploy(mod), target)
    calls = call_sites(planned)
    report = {}
    for fn in planned_functions(planned):
        report[fn.symbol] = {
            "op": fn.spec.kind, "summary": fn.family.summary(fn.spec), "shapes": fn.family.shapes(fn.spec),
            "output_shape": list(fn.output.shape), "dtype": getattr(fn.spec, "dtype", "float32"),
            "out_dtype": fn.output.dtype, "call_sites": calls[fn.symbol], **fn.plan}
    return report


def call_sites(mod: tvm.IRModule) -> collections.Counter:
    """Offloaded function symbol -> the number of calls to it from the module's other Relax functions."""
    symbols = {gvar: str(func.attrs["global_symbol"]) for gvar, func in offloaded_functions(mod)}
    counts = collections.Counter({symbol: 0 for symbol in symbols.values()})

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, relax.GlobalVar) and expr.op in symbols:
            counts[symbols[expr.op]] += 1

    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function) and gvar not in symbols:
            relax.analysis.post_order_visit(func, visit)
    return counts
