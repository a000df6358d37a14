"""QDQ graphs as onnxruntime's `quantize_static` writes them, made matchable one linear layer at a time.

Two of its habits leave a `dequantize -> matmul -> quantize` group with a value that is also used
outside it, which fusing would lose (the pattern checks refuse such a match):
- one DequantizeLinear feeds several MatMuls (q, k and v; gate and up): each matmul gets its own copy
  of the dequantize;
- one MatMul output feeds several identical QuantizeLinear nodes (`DedicatedQDQPair`): the repeats
  become the first one.
Both rewrites compute exactly what the graph computes.
"""

from __future__ import annotations

import collections

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

_DEQUANTIZE, _QUANTIZE, _MATMUL = (tvm.ir.Op.get(f"relax.{name}") for name in ("dequantize", "quantize", "matmul"))


def _uses(func: relax.Function) -> collections.Counter:
    """Var -> the number of places it is read (call arguments, tuple fields, the function's result)."""
    uses = collections.Counter()

    def visit(expr):
        fields = expr.args if isinstance(expr, relax.Call) else expr.fields if isinstance(expr, relax.Tuple) else ()
        uses.update(arg for arg in fields if isinstance(arg, relax.Var))

    relax.analysis.post_order_visit(func, visit)
    if isinstance(func.body, relax.SeqExpr) and isinstance(func.body.body, relax.Var):
        uses[func.body.body] += 1
    return uses


def _quantize_key(value):
    """What makes two quantize calls the same (source, scale and zero point values, axis, dtype), or None."""
    if not (isinstance(value, relax.Call) and value.op.same_as(_QUANTIZE)
            and all(isinstance(a, tvm.ir.expr.Constant) for a in value.args[1:])):
        return None
    consts = tuple((str(a.value.dtype), tuple(a.value.shape), a.value.numpy().tobytes()) for a in value.args[1:])
    return (value.args[0], *consts, int(value.attrs.axis), str(value.attrs.out_dtype))


@mutator
class _Unshare(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, uses: collections.Counter):
        super().__init__(mod)
        self.uses = uses
        self.quantized = {}  # (source, scale, zero point, axis, dtype) -> the first quantize's var

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if not call.op.same_as(_MATMUL):
            return call
        return relax.Call(call.op, [self._own_dequantize(arg) for arg in call.args], call.attrs, call.ty_args)

    def visit_var_binding_(self, binding):
        value = self.visit_expr(binding.value)
        key = _quantize_key(value)
        if key in self.quantized:  # a repeated quantize: its readers read the first one
            self.set_var_remap(binding.var, self.quantized[key])
            return
        self.builder_.emit_normalized(relax.VarBinding(binding.var, value))
        if key is not None:
            self.quantized[key] = binding.var

    def _own_dequantize(self, arg):
        """A dequantize read elsewhere too, repeated for this matmul alone."""
        if not isinstance(arg, relax.Var) or self.uses[arg] < 2:
            return arg
        value = self.lookup_binding(arg)
        if not isinstance(value, relax.Call) or not value.op.same_as(_DEQUANTIZE):
            return arg
        return self.builder_.emit(relax.Call(value.op, value.args, value.attrs, value.ty_args))


@tvm.transform.module_pass(opt_level=0, name="DeeployUnshareQDQ")
def unshare_qdq(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Every Relax function not yet offloaded, with shared dequantize and repeated quantize ops undone."""
    functions = {gvar: relax.analysis.remove_all_unused(_Unshare(mod, _uses(func)).visit_expr(func))
                 if isinstance(func, relax.Function) and not (func.attrs and "Codegen" in func.attrs) else func
                 for gvar, func in mod.functions.items()}
    return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)
