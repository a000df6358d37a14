"""`plan_offloads`: the planning stage, between partitioning and RunCodegen.

For every offloaded function (Codegen="deeploy") it runs describe -> engine choice -> tiling once, through
the op's family, and writes the decisions onto the function as the attribute "deeploy.plan" (see
attribute.py). Everything after it — `relax.ext.deeploy`, `compile_report`, `export_c` — reads them there.
"""

from __future__ import annotations

import dataclasses

import tvm
from tvm import relax

from ..offload.functions import CodegenError, Function, describe_function, offloaded_functions
from ..targets.target import platform_of
from .attribute import PLAN_ATTR, plain, rebuild_tiling
from .engines import check_weight_memory


def plan_offloads(mod: tvm.IRModule, target: tvm.target.Target | str = "deeploy") -> tvm.IRModule:
    """`mod` (partitioned) with every offloaded function planned for `target`'s platform: a new module,
    the functions carrying "deeploy.plan". Raises TilingError (or WeightMemoryError) naming the op when
    no plan fits."""
    target = tvm.target.Target(target) if isinstance(target, str) else target
    platform = platform_of(target)
    plans, on_npu = {}, []
    for gvar, func in offloaded_functions(mod):
        fn = describe_function(func)
        plans[gvar] = fn.family.plan(fn.spec, platform)
        if plans[gvar]["engine"] == "npu":
            on_npu.append(fn.spec)
    check_weight_memory(on_npu, platform)
    functions = {gvar: func.with_attr(PLAN_ATTR, plans[gvar]) if gvar in plans else func
                 for gvar, func in mod.functions.items()}
    return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)


def planned_function(func: relax.Function) -> Function:
    """An offloaded function described, with the plan its attribute holds (the solver does not run)."""
    fn = describe_function(func)
    if PLAN_ATTR not in func.attrs:
        raise CodegenError(f"{fn.symbol} ({fn.family.summary(fn.spec)}) has no \"{PLAN_ATTR}\" attribute: run "
                           "tvm_deeploy.plan_offloads(mod, target) between partitioning and RunCodegen")
    plan = plain(func.attrs[PLAN_ATTR])
    return dataclasses.replace(fn, plan=plan, tiling=rebuild_tiling(fn.family.tiling_type, plan["tiling"]))


def planned_functions(mod: tvm.IRModule) -> list[Function]:
    """The planned offloaded functions of `mod`, in symbol order."""
    return [planned_function(func) for _, func in offloaded_functions(mod)]
