"""Offloaded Relax functions (Codegen="deeploy") -> plain descriptions: symbol, family, spec, signature.

Planning (plan/offloads.py) and emission (emit/codegen.py) both start from `describe_function`; the plan
the first writes as an attribute the second reads back into `Function.plan` and `Function.tiling`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import tvm
from tvm import relax

from .describe import CallTree, static_type
from .registry import Family, family_of_pattern
from .specs import Operand, OpSpec


class CodegenError(RuntimeError):
    """An offloaded function the codegen cannot lower (a pattern check should have refused it)."""


@dataclass(frozen=True)
class Tensor:
    """A parameter of an offloaded function's C entry (inputs first, the output last)."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Function:
    """One offloaded function: its C symbol, its op, its signature and, once planned, its plan (the
    "deeploy.plan" attribute as plain data) and the tiling that plan holds (None: untiled)."""

    symbol: str
    family: Family = field(compare=False)
    spec: OpSpec
    inputs: tuple[Tensor, ...]
    output: Tensor
    plan: dict | None = field(default=None, compare=False)
    tiling: object | None = None

    @property
    def engine(self) -> str:
        return self.plan["engine"]

    @property
    def l1_bytes(self) -> int:
        return self.plan["l1_bytes"]


def offloaded_functions(mod: tvm.IRModule) -> list[tuple[relax.GlobalVar, relax.Function]]:
    """(global var, function) of each function of a partitioned module with Codegen="deeploy", in
    symbol order (so nothing downstream depends on the module's order)."""
    found = [(gvar, f) for gvar, f in mod.functions.items()
             if isinstance(f, relax.Function) and f.attrs and f.attrs.get("Codegen") == "deeploy"]
    return sorted(found, key=lambda item: str(item[1].attrs["global_symbol"]))


def describe_function(func: relax.Function) -> Function:
    """An offloaded function (one composite call) -> its description, not yet planned."""
    symbol = str(func.attrs["global_symbol"])
    # The body binds the composite function to a local var, then calls it once.
    local = {b.var: b.value for block in func.body.blocks for b in block.bindings}
    calls = [v for v in local.values() if isinstance(v, relax.Call)]
    if len(calls) != 1:
        raise CodegenError(f"{symbol}: expected a single composite call, found {len(calls)} calls")
    call = calls[0]
    composite = local.get(call.op, call.op)
    if not isinstance(composite, relax.Function) or "Composite" not in (composite.attrs or {}):
        raise CodegenError(f"{symbol}: the call is not to a composite function")
    family = family_of_pattern(str(composite.attrs["Composite"]))
    # Composite parameters map to the offloaded function's parameters through the call's arguments.
    order = []
    for arg in call.args:
        position = [i for i, p in enumerate(func.params) if p.same_as(arg)]
        if not position:
            raise CodegenError(f"{symbol}: composite argument {arg} is not a function parameter")
        order.append(position[0])
    inner = {b.var: b.value for block in composite.body.blocks for b in block.bindings}
    spec = family.describe(CallTree(inner, composite.params), inner[composite.body.body])
    inputs = tuple(Tensor(*static_type(p)) for p in func.params)
    return Function(symbol, family, _remap_params(spec, order), inputs, Tensor(*static_type(func.body.body)))


def _remap_params(spec, order):
    """Rewrite operand parameter indexes from composite to offloaded-function numbering."""
    changes = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, Operand) and value.param is not None:
            changes[f.name] = dataclasses.replace(value, param=order[value.param])
    return dataclasses.replace(spec, **changes)
