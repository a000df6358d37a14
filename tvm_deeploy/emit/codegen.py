"""The external codegen `relax.ext.deeploy`: planned offloaded Relax functions -> one C source module.

RunCodegen hands over every function with Codegen="deeploy", attributes included; each becomes a plain
C entry (raw pointers, callable from a standalone program) plus the tvm-ffi wrapper the VM calls, as
its "deeploy.plan" attribute (plan/offloads.py) says. Nothing is decided here.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax

from ..offload.functions import Function, offloaded_functions
from ..plan.offloads import planned_function, planned_functions
from .ops import emit_module


@tvm_ffi.register_global_func("relax.ext.deeploy", override=True)
def _deeploy_codegen(functions, _options, _constant_names):
    planned = sorted((planned_function(f) for f in functions), key=lambda fn: fn.symbol)
    create = tvm.get_global_func("runtime.CSourceModuleCreate")
    return [create(emit_module(planned), "c", [fn.symbol for fn in planned], [])]


def _embedded_constants(mod: tvm.IRModule) -> list:
    """The tensors of the constants inside offloaded functions: their C carries them."""
    tensors = []

    def visit(expr):
        if isinstance(expr, tvm.ir.expr.Constant):
            tensors.append(expr.value)

    for _, func in offloaded_functions(mod):
        relax.analysis.post_order_visit(func, visit)
    return tensors


def run_codegen(mod: tvm.IRModule) -> tuple[tvm.IRModule, list[Function]]:
    """RunCodegen on a planned module (`plan_offloads`), then drop the constants our C already carries
    so the library stores them once. Also returns the planned functions it compiled, in symbol order."""
    functions = planned_functions(mod)
    embedded = _embedded_constants(mod)
    mod = relax.transform.RunCodegen()(mod)
    attrs = mod.attrs
    if attrs is None or "const_name_to_constant" not in attrs or not embedded:
        return mod, functions
    kept = {name: value for name, value in attrs["const_name_to_constant"].items()
            if not any(value.same_as(tensor) for tensor in embedded)}
    return mod.with_attr("const_name_to_constant", kept), functions
