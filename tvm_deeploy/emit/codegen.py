"""The external codegen `relax.ext.deeploy`: offloaded Relax functions -> one C source module.

RunCodegen hands over every function with Codegen="deeploy"; each becomes a plain C entry
(raw pointers, callable from a standalone program) plus the tvm-ffi wrapper the VM calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import tvm
import tvm_ffi
from tvm import relax

from ..offload.describe import CallTree, describe, static_type
from ..offload.patterns import FAMILY
from ..offload.specs import AttentionSpec, GemmSpec, Operand
from ..plan.engines import check_weight_memory, choose_engine
from ..plan.tiling import tile_attention
from ..targets.platforms import Platform, parse_mcpu
from ..targets.target import DEFAULT_PLATFORM
from .ops import Function, Tensor, emit_module


@dataclasses.dataclass
class _Record:
    """What the codegen did during one `run_codegen`: the functions it compiled, and the names of
    the constants their C embeds (so the VM need not store them)."""

    functions: list[Function] = dataclasses.field(default_factory=list)
    constants: set[str] = dataclasses.field(default_factory=set)


_records: list[_Record] = []


class CodegenError(RuntimeError):
    """An offloaded function the codegen cannot lower (a pattern check should have refused it)."""


def lower_function(func: relax.Function) -> Function:
    """An offloaded function (one composite call) -> the emitter's plain description."""
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
    pattern = str(composite.attrs["Composite"])
    # Composite parameters map to the offloaded function's parameters through the call's arguments.
    order = []
    for arg in call.args:
        position = [i for i, p in enumerate(func.params) if p.same_as(arg)]
        if not position:
            raise CodegenError(f"{symbol}: composite argument {arg} is not a function parameter")
        order.append(position[0])
    inner = {b.var: b.value for block in composite.body.blocks for b in block.bindings}
    root = inner[composite.body.body]
    spec = describe(FAMILY[pattern], CallTree(inner, composite.params), root)
    spec = _remap_params(spec, order)
    inputs = tuple(Tensor(*static_type(p)) for p in func.params)
    return Function(symbol, spec, inputs, Tensor(*static_type(func.body.body)))


def _remap_params(spec, order):
    """Rewrite operand parameter indexes from composite to offloaded-function numbering."""
    changes = {}
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        if isinstance(value, Operand) and value.param is not None:
            changes[field.name] = dataclasses.replace(value, param=order[value.param])
    return dataclasses.replace(spec, **changes)


def lower_functions(functions) -> list[Function]:
    """Lower offloaded functions in symbol order, so the emitted C does not depend on input order."""
    return sorted((lower_function(f) for f in functions), key=lambda fn: fn.symbol)


def plan_functions(functions: list[Function], platform: Platform) -> list[Function]:
    """Choose each op's engine and tiling for the platform (the strategy the emitted C applies)."""
    planned = []
    for fn in functions:
        if isinstance(fn.spec, GemmSpec):
            choice = choose_engine(fn.spec, platform)
            fn = dataclasses.replace(fn, tiling=choice.tiling, estimates=choice.estimates)
        elif isinstance(fn.spec, AttentionSpec):
            tiling = tile_attention(fn.spec, platform)
            fn = dataclasses.replace(fn, tiling=tiling, estimates=(("cluster", tiling.modelled_cycles),))
        planned.append(fn)
    check_weight_memory([fn.spec for fn in planned if fn.engine == "npu"], platform)
    return planned


def compile_functions(functions, platform: Platform) -> list[Function]:
    """Offloaded Relax functions -> lowered and tiled functions, ready to emit."""
    return plan_functions(lower_functions(functions), platform)


def offloaded_functions(mod: tvm.IRModule) -> list[relax.Function]:
    """The functions of a partitioned module that carry Codegen="deeploy"."""
    return [f for f in mod.functions.values()
            if isinstance(f, relax.Function) and f.attrs and f.attrs.get("Codegen") == "deeploy"]


@tvm_ffi.register_global_func("relax.ext.deeploy", override=True)
def _deeploy_codegen(functions, options, constant_names):
    platform = parse_mcpu(str(options.get("mcpu", DEFAULT_PLATFORM)) if options else DEFAULT_PLATFORM)
    compiled = compile_functions(functions, platform)
    if _records:
        _records[-1].functions.extend(compiled)
        _records[-1].constants.update(str(name) for name in constant_names.values())
    source = emit_module(compiled)
    create = tvm.get_global_func("runtime.CSourceModuleCreate")
    return [create(source, "c", [fn.symbol for fn in compiled], [])]


@contextlib.contextmanager
def _recording() -> Iterator[_Record]:
    _records.append(_Record())
    try:
        yield _records[-1]
    finally:
        _records.pop()


def run_codegen(mod: tvm.IRModule, platform: Platform) -> tuple[tvm.IRModule, list[Function]]:
    """RunCodegen for `platform`, then drop the constants our C already carries so the library
    stores them once. Also returns the compiled (lowered and tiled) functions, in symbol order."""
    with _recording() as record:
        mod = relax.transform.RunCodegen({"deeploy": {"mcpu": platform.mcpu}})(mod)
    functions = sorted(record.functions, key=lambda fn: fn.symbol)
    attrs = mod.attrs
    if attrs is None or "const_name_to_constant" not in attrs or not record.constants:
        return mod, functions
    kept = {name: value for name, value in attrs["const_name_to_constant"].items() if name not in record.constants}
    return mod.with_attr("const_name_to_constant", kept), functions
