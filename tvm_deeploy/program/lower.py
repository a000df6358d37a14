"""Lower a Relax module to a straight-line program: plain data for the standalone C project.

The module goes through exactly what `tvm.relax.build(mod, target)` runs before memory planning:
under a deeploy target the offload (partition + our codegen), then TVM's dispatch, LegalizeOps,
RewriteDataflowReshape, ToNonDataflow and RemovePurityChecking. It is lowered once, so every exported
function (`main` by default) calls the same PrimFuncs and offloaded entries; each function's bindings
then become the steps of its own `Program`:

- `R.call_tir(f, args)`          -> a "tvm" step calling TIR PrimFunc `f` (built to C separately);
- `R.call_tir_inplace(f, args)`  -> the same, its in-place outputs views of the arguments they overwrite;
- `R.call_dps_packed(sym, args)` -> a "deeploy" step calling the offloaded C entry `sym`;
- `R.reshape(x, shape)`          -> a view of x's memory (no step, no copy);
- constants                      -> weights; variables, tuples and tuple items -> names.

A parameter the function writes in place and returns is *state* (e.g. a KV cache): it lives in the
program's memory across calls, is neither an input nor an output, and is one tensor for every exported
function that has a parameter of that name. Other returned values that are inputs, constants, or
already returned get an explicit copy step. Anything else (control flow, symbolic shapes, calls into
the TVM runtime, an input written in place) is refused with an `UnsupportedModelError` that says what
is unsupported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.relax import backend, transform

from ..emit.codegen import run_codegen
from ..offload.functions import Function
from ..offload.partition import partition_for_deeploy
from ..plan.offloads import plan_offloads
from ..targets.target import is_deeploy_target
from .half import compute_half_in_float32


class ExportError(Exception):
    """The standalone C program cannot be produced (base class)."""


class UnsupportedModelError(ExportError):
    """The model uses something the standalone program cannot express."""


# Element types the C program handles: dtype -> (DLPack type code, bits); their C types are emit.c.C_TYPES.
DTYPES = {
    "float16": (2, 16), "float32": (2, 32), "float64": (2, 64),  # float16: stored as half (half.py)
    "int8": (0, 8), "int16": (0, 16), "int32": (0, 32), "int64": (0, 64),
    "uint8": (1, 8), "uint16": (1, 16), "uint32": (1, 32), "uint64": (1, 64),
    "bool": (6, 8),  # TVM stores a bool in a byte (DLPack kDLBool)
}

# TVM's op patterns (AnnotateTIROpPattern) under which output element i depends only on input element i
# of a same-shaped input: kElemWise and kBroadcast.
_INPLACE_PATTERNS = (0, 1)


@dataclass(frozen=True)
class Value:
    """A tensor of the program. `base` names the value whose memory it is (itself unless a view)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "input", "const", "activation" or "state"
    base: str

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.elements * DTYPES[self.dtype][1] // 8


@dataclass(frozen=True)
class Step:
    kind: str  # "tvm" (TIR PrimFunc), "deeploy" (offloaded C entry) or "copy"
    callee: str  # PrimFunc name, deeploy symbol, or "" for a copy
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    inplace: tuple[int, ...] = ()  # input positions the single output may overwrite element by element


@dataclass(frozen=True)
class Program:
    values: dict[str, Value]
    inputs: tuple[str, ...]  # the function's parameters but its state, in order
    outputs: tuple[str, ...]  # returned values but the state, in order (distinct bases, none an input or constant)
    constants: dict[str, np.ndarray]  # the constants it reads (names unique across the module's programs)
    steps: tuple[Step, ...]
    state: tuple[str, ...] = ()  # state tensors it writes in place and keeps, in parameter order

    def base(self, name: str) -> Value:
        return self.values[self.values[name].base]


@dataclass(frozen=True)
class Lowered:
    programs: dict[str, Program]  # exported function -> its program, in export order (value names unique)
    prim_funcs: dict[str, tirx.PrimFunc]  # called TIR functions by name, sorted
    offloaded: list[Function] = field(default_factory=list)  # deeploy entries, in symbol order
    module: tvm.IRModule | None = None  # the lowered module (for TVM's own memory planning figure)


def tvm_lowering_passes() -> list:
    """TVM's default build pipeline up to (not including) CallTIRRewrite and memory planning."""
    return [backend.DispatchSampling(), backend.DispatchSortScan(), transform.LegalizeOps(),
            transform.RewriteDataflowReshape(), transform.ToNonDataflow(), transform.RemovePurityChecking()]


_C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if inline int long "
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while "
    "_Bool _Complex _Imaginary bool true false NULL".split())


def c_identifier(text: str) -> str:
    """`text` as a C identifier: other characters become `_`, a leading digit or a keyword gets `t_`."""
    name = re.sub(r"\W", "_", str(text), flags=re.ASCII) or "t"
    return f"t_{name}" if name[0].isdigit() or name in _C_KEYWORDS else name


class _Namer:
    """Unique C identifiers; unique regardless of case too, as names also appear upper-cased in macros."""

    def __init__(self):
        self.used = set()

    def __call__(self, hint: str) -> str:
        base = c_identifier(hint)
        name, i = base, 1
        while name.lower() in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name.lower())
        return name


def static_tensor(ty, what: str) -> tuple[tuple[int, ...], str]:
    """(shape, dtype) of a tensor type the program can hold; refuses dynamic shapes and other dtypes."""
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise UnsupportedModelError(f"{what} is not a tensor of known shape ({ty}): dynamic shapes are not "
                                    "supported by the standalone program")
    values = ty.shape.values
    if not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        dims = ", ".join(str(int(v)) if isinstance(v, tvm.tirx.IntImm) else str(v) for v in values)
        raise UnsupportedModelError(f"dynamic shapes are not supported by the standalone program: {what} has "
                                    f"shape ({dims})")
    dtype = str(ty.dtype)
    if dtype not in DTYPES:
        raise UnsupportedModelError(f"{what} has dtype {dtype}; the standalone program supports "
                                    f"{', '.join(DTYPES)}")
    return tuple(int(v) for v in values), dtype


def check_supported(mod: tvm.IRModule, functions: tuple[str, ...] = ("main",)) -> None:
    """Refuse, before any lowering, what the program cannot express: a missing function, dynamic input
    shapes, control flow, calls to other Relax functions."""
    available = sorted(gv.name_hint for gv, f in mod.functions.items() if isinstance(f, relax.Function))
    for name in functions:
        if name not in available:
            raise UnsupportedModelError(f"the module has no `{name}` function (its Relax functions: "
                                        f"{', '.join(available) or 'none'})")
        _check_function(mod, name)


def _check_function(mod: tvm.IRModule, name: str) -> None:
    function = mod[name]
    found = []

    def visit(expr):
        if isinstance(expr, relax.If):
            found.append("control flow (if/else)")
        elif isinstance(expr, relax.Call) and isinstance(expr.op, relax.GlobalVar):
            callee = mod[expr.op] if expr.op in mod.get_global_vars() else None
            if isinstance(callee, relax.Function) and not (callee.attrs and "Codegen" in callee.attrs):
                found.append(f"a call to the Relax function '{expr.op.name_hint}'")

    relax.analysis.post_order_visit(function.body, visit)
    _check_qdq_scales(function, name)
    _check_sizes(function, name)
    if found:
        raise UnsupportedModelError(f"unsupported in the standalone program: {sorted(set(found))[0]} in {name} "
                                    "(only a straight-line sequence of tensor ops can become C)")
    for param in function.params:
        if isinstance(param.ty, relax.TensorType):
            static_tensor(param.ty, f"input '{param.name}'")
        else:
            raise UnsupportedModelError(f"input '{param.name}' is not a tensor ({param.ty}); the standalone "
                                        "program takes tensors only")


_QDQ_OPS = ("relax.quantize", "relax.dequantize")


def _check_qdq_scales(function: relax.Function, name: str) -> None:
    """A constant quantize/dequantize scale must be positive and finite: TVM divides by it (a zero
    scale is a raw divide-by-zero in its compiler) and our requantization assumes its sign."""
    found = []  # raised after the walk: an exception inside the visitor comes back as a RuntimeError

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name in _QDQ_OPS \
                and isinstance(expr.args[1], tvm.ir.expr.Constant):
            scales = expr.args[1].value.numpy().astype(np.float64).ravel()
            bad = scales[~(np.isfinite(scales) & (scales > 0))]
            if bad.size:
                found.append(f"{expr.op.name[len('relax.'):]} in {name} has scale {bad[0]:g} ({bad.size} of "
                             f"{scales.size} values are not positive and finite)")

    relax.analysis.post_order_visit(function.body, visit)
    if found:
        raise UnsupportedModelError(found[0])


def _check_sizes(function: relax.Function, name: str) -> None:
    """Refuse zero-size tensors (a dimension of 0): C has no zero-length arrays."""
    typed = [(f"input '{p.name}'", p.ty) for p in function.params]
    blocks = function.body.blocks if isinstance(function.body, relax.SeqExpr) else []
    typed += [(f"'{b.var.name}'", b.var.ty) for block in blocks for b in block.bindings]
    for what, info in typed:
        shape = getattr(info, "shape", None)
        values = getattr(shape, "values", None) or []
        if any(isinstance(v, tvm.tirx.IntImm) and int(v) == 0 for v in values):
            dims = ", ".join(str(int(v)) if isinstance(v, tvm.tirx.IntImm) else str(v) for v in values)
            raise UnsupportedModelError(f"{what} in {name} has a dimension of size 0 ({dims}); the standalone "
                                        "program has no zero-size tensors")


@relax.expr_functor.mutator
class _StandaloneForm(relax.PyExprMutator):
    """Two rewrites for the standalone program. `take` (ONNX Gather) in TVM's default mode reads outside
    its table for an index outside the axis; the program gets untrusted indices at run time, so it
    clamps them to [0, n - 1]. `shape_to_tensor` of a static shape (ONNX Gather's negative-index wrap)
    becomes a constant, so no shape value is left for C."""

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if not isinstance(call.op, tvm.ir.Op):
            return call
        if call.op.name == "relax.take" and call.attrs.mode == "fast":
            return relax.op.take(call.args[0], call.args[1], call.attrs.axis, mode="clip")
        if call.op.name == "relax.shape_to_tensor":
            dims = getattr(call.args[0].ty, "values", None)
            if dims is not None and all(isinstance(d, tirx.IntImm) for d in dims):
                return relax.const(np.array([int(d) for d in dims], "int64"), "int64")
        return call


def standalone_form(mod: tvm.IRModule) -> tvm.IRModule:
    """`mod` with the rewrites of _StandaloneForm, bindings left unused removed."""
    mutator = _StandaloneForm(mod)
    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, relax.analysis.remove_all_unused(mutator.visit_expr(func)))
    return mutator.builder_.get()


def _lower(mod, target, offload):
    functions: list[Function] = []
    mod = standalone_form(mod)
    with target:
        if offload and is_deeploy_target(target):
            mod, functions = run_codegen(plan_offloads(partition_for_deeploy(mod), target))
        mod = tvm.transform.Sequential(tvm_lowering_passes())(compute_half_in_float32(mod))
    return mod, functions


def lower_program(mod: tvm.IRModule, target: tvm.target.Target, offload: bool = True,
                  functions: tuple[str, ...] = ("main",)) -> Lowered:
    """Lower `mod` for `target` (offloading when it is a deeploy target and `offload`) and turn each of
    `functions` into a `Program`."""
    functions = tuple(functions)
    if not functions or len(set(functions)) != len(functions):
        raise ValueError(f"functions must name distinct Relax functions, got {functions}")
    check_supported(mod, functions)
    lowered, compiled = _lower(mod, target, offload)
    states = state_parameters({name: lowered[name] for name in functions})
    shared = _Shared(_op_patterns(lowered))
    programs = {name: _Walker(lowered, name, shared, states).run() for name in functions}
    steps = [s for program in programs.values() for s in program.steps]
    called = sorted({s.callee for s in steps if s.kind == "tvm"})
    prim_funcs = {name: lowered[name] for name in called}
    symbols = {s.callee for s in steps if s.kind == "deeploy"}
    known = {fn.symbol for fn in compiled}
    if symbols - known:
        raise ExportError(f"offloaded calls without generated C: {sorted(symbols - known)}")
    return Lowered(programs, prim_funcs, [fn for fn in compiled if fn.symbol in symbols], lowered)


# ---- state: parameters written in place and returned ------------------------------------------------

def _param_effects(function: relax.Function) -> tuple[set[str], set[str]]:
    """(parameters a call_tir_inplace writes, parameters returned), followed through variables, reshape
    views and earlier in-place results (the walker refuses an in-place write to an input it missed)."""
    memory = {p: p.name for p in function.params}  # variable -> the parameter whose memory it is (or a tuple)
    written = set()
    for block in function.body.blocks:
        for binding in block.bindings:
            value, var = binding.value, binding.var
            if isinstance(value, relax.Var) and value in memory:
                memory[var] = memory[value]
            elif isinstance(value, relax.TupleGetItem) and isinstance(memory.get(value.tuple_value), tuple):
                memory[var] = memory[value.tuple_value][value.index]
            elif isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                if value.op.name == "relax.reshape" and value.args[0] in memory:
                    memory[var] = memory[value.args[0]]
                elif value.op.name == "relax.call_tir_inplace":
                    args = value.args[1].fields
                    targets = tuple(memory.get(args[i]) if i >= 0 else None for i in _inplace_indices(value))
                    written.update(t for t in targets if t is not None)
                    memory[var] = targets if isinstance(var.ty, relax.TupleType) else targets[0]
    result = function.body.body
    bound = {b.var: b.value for block in function.body.blocks for b in block.bindings}
    result = bound.get(result, result) if isinstance(result, relax.Var) else result
    fields = result.fields if isinstance(result, relax.Tuple) else [result]
    returned = {memory[f] for f in fields if isinstance(memory.get(f), str)}
    return written, returned


def _inplace_indices(call: relax.Call) -> list[int]:
    return [int(i) for i in call.attrs.inplace_indices]


def state_parameters(functions: dict[str, relax.Function]) -> set[str]:
    """Names of the parameters that are state: written in place and returned by some function. Every
    function with a parameter of that name must write it and return it too; a parameter written in place
    but not returned is refused (the program cannot change its caller's inputs)."""
    effects = {name: _param_effects(function) for name, function in functions.items()}
    for name, (written, returned) in effects.items():
        for param in sorted(written - returned):
            raise UnsupportedModelError(f"{name}: parameter '{param}' is written in place (call_tir_inplace) but "
                                        "not returned; only state -- a parameter written in place and returned, "
                                        "kept across calls -- may be written")
    states = {}  # state name -> the first function that makes it state
    for name, (written, returned) in effects.items():
        for param in sorted(written & returned):
            states.setdefault(param, name)
    for name, function in functions.items():
        written, returned = effects[name]
        for param in function.params:
            if param.name in states and not (param.name in written and param.name in returned):
                does = "returns it without writing it" if param.name in returned else \
                    "does not return it" if param.name in written else "neither writes nor returns it"
                raise UnsupportedModelError(f"{name}: parameter '{param.name}' is state in {states[param.name]} "
                                            f"(written in place and returned) but {name} {does}: state must be "
                                            "written in place and returned by every function that has it")
    return set(states)


def _op_patterns(mod: tvm.IRModule) -> dict[str, int]:
    """PrimFunc name -> op pattern when the function is a single block (else no entry)."""
    prims = {gv: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    if not prims:
        return {}
    annotated = transform.AnnotateTIROpPattern()(tvm.IRModule(prims))
    patterns = {}
    for gv, func in annotated.functions.items():
        if func.attrs and "op_pattern" in func.attrs and func.script().count("T.sblock(") == 2:
            patterns[gv.name_hint] = int(func.attrs["op_pattern"])
    return patterns


@dataclass
class _Shared:
    """What the walks of one module's functions share: value names (unique across the module, as the
    functions share one C file), constants (stored once) and state tensors (one per parameter name)."""

    patterns: dict[str, int]
    namer: _Namer = field(default_factory=_Namer)
    constant_keys: dict[tuple, str] = field(default_factory=dict)
    constants: dict[str, tuple[Value, np.ndarray]] = field(default_factory=dict)
    states: dict[str, tuple[Value, str]] = field(default_factory=dict)  # parameter name -> (value, function)


class _Walker:
    """One function's bindings -> its `Program` (names, constants and state shared through `shared`)."""

    def __init__(self, mod: tvm.IRModule, function: str, shared: _Shared, states: set[str]):
        self.name = function
        self.function = mod[function]
        self.shared = shared
        self.states = states  # parameter names that are state
        self.namer = shared.namer
        self.values: dict[str, Value] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.steps: list[Step] = []
        self.env: dict = {}  # relax.Var -> value name, or tuple of names
        self.patterns = shared.patterns

    def _add(self, hint: str, shape, dtype: str, kind: str, base: str | None = None) -> str:
        name = self.namer(hint)
        self.values[name] = Value(name, tuple(shape), dtype, kind, base or name)
        return name

    def _constant(self, const) -> str:
        array = const.data.numpy() if hasattr(const, "data") else const.value.numpy()
        shape, dtype = tuple(array.shape), str(array.dtype)
        if dtype not in DTYPES:
            raise UnsupportedModelError(f"a constant has dtype {dtype}; the standalone program supports "
                                        f"{', '.join(DTYPES)}")
        array = np.ascontiguousarray(array)
        key = (dtype, shape, array.tobytes())
        shared = self.shared
        if key not in shared.constant_keys:  # equal constants are stored once, for every function
            name = self.namer(f"c{len(shared.constants)}")
            shared.constants[name] = (Value(name, shape, dtype, "const", name), array)
            shared.constant_keys[key] = name
        name = shared.constant_keys[key]
        self.values[name], self.constants[name] = shared.constants[name]
        return name

    def _tensor(self, expr, what: str) -> str:
        if isinstance(expr, relax.Var):
            value = self.env.get(expr)
            if value is None:
                raise ExportError(f"{what}: variable {expr.name} is used before it is defined")
            if isinstance(value, tuple):
                raise UnsupportedModelError(f"{what}: a tuple is passed where a tensor is expected")
            return value
        if isinstance(expr, tvm.ir.expr.Constant):
            return self._constant(expr)
        raise UnsupportedModelError(f"{what}: argument {type(expr).__name__} is not supported by the standalone "
                                    "program (only tensors)")

    def _outputs_of(self, var: relax.Var, what: str):
        ty = var.ty
        if isinstance(ty, relax.TupleType):
            names = []
            for i, field_ty in enumerate(ty.fields):
                shape, dtype = static_tensor(field_ty, f"{what} output {i}")
                names.append(self._add(f"{var.name}_{i}", shape, dtype, "activation"))
            return tuple(names)
        shape, dtype = static_tensor(ty, what)
        return self._add(var.name, shape, dtype, "activation")

    def _call(self, var: relax.Var, call: relax.Call):
        op = call.op
        name = op.name if isinstance(op, tvm.ir.Op) else None
        if name == "relax.call_tir":
            func = call.args[0]
            if len(call.args) > 2:
                raise UnsupportedModelError(f"{func.name_hint}: TIR call with symbolic shape arguments "
                                            "(dynamic shapes are not supported)")
            args = tuple(self._tensor(a, func.name_hint) for a in call.args[1].fields)
            outputs = self._outputs_of(var, func.name_hint)
            self.steps.append(Step("tvm", func.name_hint, args,
                                   outputs if isinstance(outputs, tuple) else (outputs,),
                                   self._inplace(func.name_hint, args, outputs)))
            return outputs
        if name == "relax.call_tir_inplace":
            return self._call_inplace(var, call)
        if name == "relax.call_dps_packed":
            symbol = str(call.args[0].global_symbol) if isinstance(call.args[0], relax.ExternFunc) else None
            if symbol is None:
                raise UnsupportedModelError(f"call_dps_packed to {call.args[0]} is not supported")
            args = tuple(self._tensor(a, symbol) for a in call.args[1].fields)
            outputs = self._outputs_of(var, symbol)
            if isinstance(outputs, tuple):
                raise UnsupportedModelError(f"{symbol}: offloaded call with several outputs")
            self.steps.append(Step("deeploy", symbol, args, (outputs,)))
            return outputs
        if name == "relax.reshape":
            source = self._tensor(call.args[0], "reshape")
            shape, dtype = static_tensor(var.ty, f"reshape to {var.name}")
            base = self.values[source].base
            if dtype != self.values[source].dtype:
                raise ExportError(f"reshape {source} -> {var.name} changes the dtype")
            kind = self.values[base].kind
            return self._add(var.name, shape, dtype, kind, base)
        what = name or (op.name_hint if hasattr(op, "name_hint") else str(op))
        detail = f" ({call.args[0]})" if name and "packed" in name and call.args else ""
        raise UnsupportedModelError(f"'{what}'{detail} has no C form in the standalone program (it needs the TVM "
                                    "runtime)")

    def _call_inplace(self, var: relax.Var, call: relax.Call):
        """An in-place output is a view of the argument it overwrites; the PrimFunc takes the arguments,
        then the other outputs."""
        func = call.args[0].name_hint
        if len(call.args) > 2:
            raise UnsupportedModelError(f"{func}: TIR call with symbolic shape arguments (dynamic shapes are not "
                                        "supported)")
        args = tuple(self._tensor(a, func) for a in call.args[1].fields)
        several = isinstance(var.ty, relax.TupleType)
        types = list(var.ty.fields) if several else [var.ty]
        results, fresh = [], []
        for i, (index, ty) in enumerate(zip(_inplace_indices(call), types)):
            shape, dtype = static_tensor(ty, f"{func} output {i}")
            hint = f"{var.name}_{i}" if several else var.name
            if index < 0:
                fresh.append(self._add(hint, shape, dtype, "activation"))
                results.append(fresh[-1])
                continue
            target = self.values[self.values[args[index]].base]
            if target.kind in ("input", "const"):
                what = "a constant" if target.kind == "const" else f"input '{target.name}'"
                raise UnsupportedModelError(f"{self.name}: {func} writes in place into {what}; only state (a "
                                            "parameter written in place and returned) may be written")
            results.append(self._add(hint, shape, dtype, target.kind, target.name))
        self.steps.append(Step("tvm", func, args, tuple(fresh)))
        return tuple(results) if several else results[0]

    def _inplace(self, func: str, args, outputs) -> tuple[int, ...]:
        if isinstance(outputs, tuple) or self.patterns.get(func) not in _INPLACE_PATTERNS:
            return ()
        out = self.values[outputs]
        return tuple(i for i, a in enumerate(args)
                     if self.values[a].shape == out.shape and self.values[a].dtype == out.dtype)

    def _bind(self, var: relax.Var, value):
        if isinstance(value, relax.Call):
            return self._call(var, value)
        if isinstance(value, (relax.Var, tvm.ir.expr.Constant)):
            if isinstance(value, relax.Var) and isinstance(self.env.get(value), tuple):
                return self.env[value]
            return self._tensor(value, var.name)
        if isinstance(value, relax.Tuple):
            return tuple(self._bind(var, field) for field in value.fields)
        if isinstance(value, relax.TupleGetItem):
            whole = self.env.get(value.tuple_value) if isinstance(value.tuple_value, relax.Var) else None
            if not isinstance(whole, tuple):
                raise UnsupportedModelError(f"{var.name}: tuple item of {value.tuple_value} is not supported")
            return whole[value.index]
        if isinstance(value, relax.If):
            raise UnsupportedModelError("unsupported in the standalone program: control flow (if/else) in "
                                        f"{self.name}")
        raise UnsupportedModelError(f"{var.name}: {type(value).__name__} is not supported by the standalone "
                                    "program")

    def _param(self, param: relax.Var) -> str:
        shape, dtype = static_tensor(param.ty, f"input '{param.name}'")
        if param.name not in self.states:
            return self._add(param.name, shape, dtype, "input")
        if param.name not in self.shared.states:
            name = self._add(param.name, shape, dtype, "state")
            self.shared.states[param.name] = (self.values[name], self.name)
        value, first = self.shared.states[param.name]
        if (value.shape, value.dtype) != (shape, dtype):
            raise UnsupportedModelError(f"state tensor '{param.name}': {first} has {value.dtype}{list(value.shape)}, "
                                        f"{self.name} has {dtype}{list(shape)}; the functions share it, so its "
                                        "shape and dtype must agree")
        self.values[value.name] = value
        return value.name

    def run(self) -> Program:
        names = [self._param(param) for param in self.function.params]
        for param, name in zip(self.function.params, names):
            self.env[param] = name
        inputs = tuple(n for n in names if self.values[n].kind == "input")
        state = tuple(n for n in names if self.values[n].kind == "state")
        body = self.function.body
        if not isinstance(body, relax.SeqExpr):
            raise UnsupportedModelError(f"{self.name}'s body is not a sequence of bindings")
        for block in body.blocks:
            for binding in block.bindings:
                if isinstance(binding, relax.MatchCast):
                    raise UnsupportedModelError(f"match_cast of {binding.var.name} (dynamic shapes) is not "
                                                "supported by the standalone program")
                self.env[binding.var] = self._bind(binding.var, binding.value)
        result = self._bind(relax.Var("output", body.body.ty), body.body)
        flat = result if isinstance(result, tuple) else (result,)
        if any(isinstance(item, tuple) for item in flat):
            raise UnsupportedModelError(f"nested tuples as {self.name}'s output are not supported")
        outputs = self._own_outputs(n for n in flat if self.values[self.values[n].base].kind != "state")
        return Program(self.values, inputs, outputs, self.constants, tuple(self.steps), state)

    def _own_outputs(self, flat) -> tuple[str, ...]:
        """Each output gets memory of its own: copy inputs, constants and values already returned."""
        outputs, claimed = [], set()
        for name in flat:
            value = self.values[name]
            base = self.values[value.base]
            if base.kind != "activation" or base.name in claimed:
                copy = self._add(f"{name}_copy", value.shape, value.dtype, "activation")
                self.steps.append(Step("copy", "", (name,), (copy,)))
                name, base = copy, self.values[copy]
            claimed.add(base.name)
            outputs.append(name)
        return tuple(outputs)
