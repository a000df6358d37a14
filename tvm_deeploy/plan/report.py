"""`compile_report`: what the deeploy codegen will do with a module, without building it."""

from __future__ import annotations

import tvm

from ..offload.partition import partition_for_deeploy
from .offloads import plan_offloads, planned_functions


def compile_report(mod: tvm.IRModule, target: tvm.target.Target | str = "deeploy") -> dict:
    """One entry per offloaded function: op, summary, operand shapes and dtypes, then exactly its
    "deeploy.plan" attribute (engine, every engine's modelled cycles, tile, L1 bytes, DMA bytes against
    their lower bound, solver status, the full tiling). Raises TilingError (or WeightMemoryError) like
    the build would."""
    report = {}
    for fn in planned_functions(plan_offloads(partition_for_deeploy(mod), target)):
        report[fn.symbol] = {
            "op": fn.spec.kind, "summary": fn.family.summary(fn.spec), "shapes": fn.family.shapes(fn.spec),
            "output_shape": list(fn.output.shape), "dtype": getattr(fn.spec, "dtype", "float32"),
            "out_dtype": fn.output.dtype, **fn.plan}
    return report
