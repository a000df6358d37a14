"""`compile_report`: what the deeploy codegen will do with a module, without building it."""

from __future__ import annotations

import tvm

from ..emit.codegen import compile_functions, offloaded_functions
from ..offload.partition import partition_for_deeploy
from ..offload.specs import GemmSpec, summary
from ..targets.target import platform_of
from .tiling import AttentionTiling


def _operand_shapes(spec) -> dict:
    if isinstance(spec, GemmSpec):
        return {"a": list(spec.a.shape), "b": list(spec.b.shape)}
    if spec.kind == "softmax":
        return {"x": list(spec.x.shape)}
    return {name: list(getattr(spec, name).shape) for name in ("q", "k", "v")}


def compile_report(mod: tvm.IRModule, target: tvm.target.Target | str = "deeploy") -> dict:
    """One entry per offloaded function: op, shapes, dtype, engine and every engine's modelled cycles,
    tiling, L1 bytes, DMA bytes against their lower bound, and the solver's status and seconds.
    Raises TilingError (or WeightMemoryError) like the build would."""
    target = tvm.target.Target(target) if isinstance(target, str) else target
    platform = platform_of(target)
    report = {}
    for fn in compile_functions(offloaded_functions(partition_for_deeploy(mod)), platform):
        spec, tiling = fn.spec, fn.tiling
        entry = {
            "op": spec.kind, "summary": summary(spec), "shapes": _operand_shapes(spec),
            "output_shape": list(fn.output.shape), "dtype": getattr(spec, "dtype", "float32"),
            "out_dtype": fn.output.dtype, "engine": fn.engine, "modelled_cycles": dict(fn.estimates),
        }
        if isinstance(tiling, AttentionTiling):
            entry.update(tiling.report(), solver_seconds=round(tiling.solver_seconds, 4))
            entry["modelled_cycles"] = dict(fn.estimates)  # per engine, as for every op
        elif tiling is None:  # softmax runs untiled, reading its operands where they are
            entry.update(tile=None, tiles=1, l1_bytes=0, dma_in_bytes=0, dma_out_bytes=0, dma_lower_bound=0,
                         solver_status="untiled", solver_seconds=0.0)
        else:
            entry.update(tile=[tiling.tile_m, tiling.tile_n, spec.k], tiles=tiling.tiles, cores=tiling.cores,
                         l1_bytes=tiling.l1_bytes, dma_in_bytes=tiling.dma_in_bytes,
                         dma_out_bytes=tiling.dma_out_bytes, dma_lower_bound=tiling.dma_lower_bound,
                         solver_status=tiling.solver_status, solver_seconds=round(tiling.solver_seconds, 4))
        report[fn.symbol] = entry
    return report
