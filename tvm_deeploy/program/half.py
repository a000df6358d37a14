"""float16 in the standalone program: stored as half, computed in float32.

TVM's C backend has no half arithmetic (it prints a `half` type C lacks and cannot lower float16
intrinsics such as exp). So the program keeps float16 only as storage (IEEE binary16 bits; `half` is
uint16_t in dpl_support.h, whose dpl_half_to_float / dpl_float_to_half convert, rounding to nearest even).
Every op that computes on float16 tensors gets float32 inputs and its result is rounded back to float16,
the rounding TVM's llvm build applies after each op; ops that only move elements stay in float16.
Within one op (a reduction, a matmul) float32 accumulates where llvm rounds every step to float16, so
results agree within the driver's FP16_TOLERANCE rather than bit for bit.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx

HALF = "float16"
TO_FLOAT = "dpl_half_to_float"
TO_HALF = "dpl_float_to_half"

# Ops whose float16 outputs are float16 inputs moved around: the half bits are copied unchanged.
_MOVES_ELEMENTS = frozenset(f"relax.{name}" for name in (
    "reshape", "permute_dims", "expand_dims", "squeeze", "flatten", "concat", "split", "strided_slice",
    "take", "broadcast_to", "tile", "repeat", "flip", "where"))
_DTYPE_FIELDS = ("dtype", "out_dtype")


def _is_half(expr) -> bool:
    ty = expr.ty
    if isinstance(ty, relax.TupleType):
        return any(isinstance(f, relax.TensorType) and str(f.dtype) == HALF for f in ty.fields)
    return isinstance(ty, relax.TensorType) and str(ty.dtype) == HALF


def _float32_attrs(attrs):
    """`attrs` with a float16 dtype field (matmul's out_dtype, zeros' dtype, ...) made float32."""
    if attrs is None:
        return attrs
    info = attrs.__tvm_ffi_type_info__
    fields = {f.name: getattr(attrs, f.name) for f in info.fields}
    if not any(name in _DTYPE_FIELDS and str(value) == HALF for name, value in fields.items()):
        return attrs
    fields.update({name: "float32" for name in _DTYPE_FIELDS if str(fields.get(name)) == HALF})
    return tvm.ir.make_node(info.type_key, **fields)


@relax.expr_functor.mutator
class _ThroughFloat32(relax.PyExprMutator):
    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if not isinstance(call.op, tvm.ir.Op) or not (_is_half(call) or any(_is_half(a) for a in call.args)):
            return call
        name = call.op.name
        if name == "relax.astype":
            return self._astype(call.args[0], str(call.attrs.dtype))
        if name in _MOVES_ELEMENTS:
            return call
        if not isinstance(call.ty, relax.TensorType) or any(isinstance(a.ty, relax.TupleType) for a in call.args):
            from .lower import UnsupportedModelError  # lower imports this module

            raise UnsupportedModelError(f"{name} computes on float16 tuples; the standalone program computes "
                                        "float16 through float32 one tensor at a time")
        args = [self._convert(a, TO_FLOAT, "float32") if _is_half(a) else a for a in call.args]
        wide = self.builder_.emit(relax.Call(call.op, args, _float32_attrs(call.attrs), call.ty_args))
        return self._convert(wide, TO_HALF, HALF) if str(call.ty.dtype) == HALF else wide

    def _astype(self, value, dtype: str):
        source = str(value.ty.dtype)
        if source == dtype:
            return value
        if source == HALF:
            wide = self._convert(value, TO_FLOAT, "float32")
            return wide if dtype == "float32" else self.builder_.emit(relax.op.astype(wide, dtype))
        if source != "float32":  # e.g. int8 -> float16: exact through float32 for every integer below 2^24
            value = self.builder_.emit(relax.op.astype(value, "float32"))
        return self._convert(value, TO_HALF, HALF)

    def _convert(self, value, extern: str, dtype: str):
        def elementwise(tensor):
            return te.compute(tensor.shape, lambda *i: tirx.call_extern(dtype, extern, tensor(*i)), name=dtype)

        return self.builder_.emit(self.builder_.call_te(elementwise, value, primfunc_name_hint=f"to_{dtype}"))


def compute_half_in_float32(mod: tvm.IRModule) -> tvm.IRModule:
    """`mod` with its Relax functions' float16 arithmetic done in float32 (module doc); unchanged without
    float16."""
    mutator = _ThroughFloat32(mod)
    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return mutator.builder_.get()
