"""onnxruntime's dynamic quantization made offloadable: MatMulInteger as an int8 x int8 -> int32 GEMM.

TVM imports `MatMulInteger(x_q, W, x_zp, 0)` as `matmul(astype(x_q, int32) - astype(x_zp, int32),
astype(W, int32) - astype(0, int32), out_dtype="int32")` with x_q uint8 and its zero point computed at
run time (DynamicQuantizeLinear). With W a constant int8 matrix and its zero point 0, exactly

    (x_q - x_zp) @ W = (x_q - 128) @ W - (x_zp - 128) * colsum(W)

so the product becomes the int8 GEMM `matmul(int8(x_q - 128), W)` (offloaded) minus a per-column
correction scaled by the run-time zero point (TVM). Integer arithmetic throughout: the result is
bit-identical, within int32 as long as the reduction is at most MAX_INT8_REDUCTION long.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .describe import MAX_INT8_REDUCTION

_MATMUL = tvm.ir.Op.get("relax.matmul")


def _const(value, dtype: str) -> relax.Constant:
    return relax.const(np.asarray(value, dtype))


@mutator
class _MatMulInteger(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.shifted = {}  # uint8 activation -> its int8 copy (q, k and v read one activation)

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if not call.op.same_as(_MATMUL) or str(call.attrs.out_dtype) != "int32":
            return call
        a, b = (self._minus_zero_point(arg) for arg in call.args)
        if a is None or b is None or not isinstance(b[0], tvm.ir.expr.Constant):
            return call
        (x, x_zp), (weight, w_zp) = a, b
        if not isinstance(w_zp, tvm.ir.expr.Constant) or np.any(w_zp.value.numpy() != 0):
            return call
        w = weight.value.numpy()
        if (str(x.ty.dtype), w.dtype, w.ndim, x_zp.ty.ndim) != ("uint8", np.int8, 2, 0) \
                or w.shape[0] > MAX_INT8_REDUCTION:
            return call
        product = self.builder_.emit(relax.op.matmul(self._as_int8(x), weight, out_dtype="int32"))
        zero_point = self.builder_.emit(relax.op.subtract(relax.op.astype(x_zp, "int32"), _const(128, "int32")))
        column_sums = _const(w.astype(np.int64).sum(axis=0), "int32")
        return relax.op.subtract(product, relax.op.multiply(zero_point, column_sums))

    def _bound(self, expr, op_name: str):
        value = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == op_name:
            return value
        return None

    def _minus_zero_point(self, expr):
        """(x, zero point) of `astype(x, int32) - astype(zero point, int32)`, else None."""
        difference = self._bound(expr, "relax.subtract")
        if difference is None:
            return None
        casts = [self._bound(arg, "relax.astype") for arg in difference.args]
        if any(c is None or str(c.attrs.dtype) != "int32" for c in casts):
            return None
        return casts[0].args[0], casts[1].args[0]

    def _as_int8(self, x):
        """x - 128 as int8: the uint8 activation in the int8 GEMM's range, once per activation."""
        if x not in self.shifted:
            shifted = relax.op.subtract(relax.op.astype(x, "int32"), _const(128, "int32"))
            self.shifted[x] = self.builder_.emit(relax.op.astype(shifted, "int8"))
        return self.shifted[x]


@tvm.transform.module_pass(opt_level=0, name="DeeployMatMulInteger")
def matmul_integer_as_int8(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Every Relax function not yet offloaded, with its MatMulInteger products as int8 GEMMs (see above)."""
    functions = {gvar: relax.analysis.remove_all_unused(_MatMulInteger(mod).visit_expr(func))
                 if isinstance(func, relax.Function) and not (func.attrs and "Codegen" in func.attrs) else func
                 for gvar, func in mod.functions.items()}
    return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)
