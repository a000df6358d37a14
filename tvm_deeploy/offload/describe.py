"""Matched Relax call trees -> op specs (plain data).

The same functions serve the pattern checks (a raised `Unsupported` means "leave it in TVM") and the
codegen (which receives the composite functions those checks accepted), so the two cannot disagree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from . import reference, views
from .specs import AttentionSpec, GemmSpec, Operand, SoftmaxSpec, Strides

# The int8 accumulator must not overflow int32: |a - a_zp| * |b - b_zp| <= 255 * 255 per term.
MAX_INT8_REDUCTION = (2**31 - 1) // (255 * 255)


class Unsupported(Exception):
    """The matched graph is outside what the deeploy codegen runs; TVM keeps it."""


class CallTree:
    """The bindings of one match, walked from its root towards its inputs."""

    def __init__(self, bindings: Mapping, params: Sequence[relax.Var] | None = None):
        self._bindings = bindings
        self._params = list(params) if params is not None else None

    def call(self, expr, op_name: str | None = None):
        """The call producing `expr` inside the match (optionally only if it is `op_name`), else None."""
        value = self._bindings.get(expr) if isinstance(expr, relax.Var) else expr
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            if op_name is None or value.op.name == op_name:
                return value
        return None

    def operand(self, expr) -> Operand:
        shape, dtype = static_type(expr)
        if isinstance(expr, tvm.ir.expr.Constant):
            return Operand(shape, dtype, const=expr.value.numpy())
        param = None
        if self._params is not None:
            matches = [i for i, p in enumerate(self._params) if p.same_as(expr)]
            if not matches:
                raise Unsupported(f"operand {expr} is neither a constant nor a parameter")
            param = matches[0]
        return Operand(shape, dtype, param=param)


def static_type(expr) -> tuple[tuple[int, ...], str]:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise Unsupported(f"{expr} is not a tensor of known rank")
    values = ty.shape.values
    if not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        raise Unsupported(f"symbolic shape {list(values)}")
    return tuple(int(v) for v in values), str(ty.dtype)


def const_array(expr, what: str) -> np.ndarray:
    if not isinstance(expr, tvm.ir.expr.Constant):
        raise Unsupported(f"{what} must be a constant")
    return expr.value.numpy()


def _other_arg(call, known):
    a, b = call.args
    return b if a.same_as(known) else a


def _column_vector(values: np.ndarray, n: int, what: str) -> np.ndarray:
    """A per-output-column vector of length n from a scalar or an [..., 1, n] constant."""
    if values.size == 1:
        return np.full(n, values.reshape(()))
    if values.shape[-1] != n or values.size != n:
        raise Unsupported(f"{what} of shape {values.shape} is not per-column for n={n}")
    return values.reshape(n)


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


def _permutation(tree: CallTree, expr):
    """(source expr, axes) if `expr` is a permute_dims inside the match, else (expr, identity)."""
    call = tree.call(expr, "relax.permute_dims")
    rank = len(static_type(expr)[0])
    if call is None:
        return expr, tuple(range(rank))
    axes = call.attrs.axes
    axes = tuple(range(rank))[::-1] if axes is None else tuple(int(a) for a in axes)
    return call.args[0], axes


# ---------------------------------------------------------------- GEMM family


def _batch_strides(op_batch, out_batch, matrix_size):
    """Per output batch dim, the element stride into an operand with batch dims `op_batch`."""
    contiguous = _contiguous_strides(tuple(op_batch) + (matrix_size,))[:-1]
    offset = len(out_batch) - len(op_batch)
    return tuple(0 if i < offset or op_batch[i - offset] == 1 else contiguous[i - offset]
                 for i in range(len(out_batch)))


def _matmul_geometry(a_shape, b_shape, b_transposed):
    if len(a_shape) < 2 or len(b_shape) < 2:
        raise Unsupported("matmul with a 1-D operand")
    m, k = a_shape[-2:]
    kb, n = (b_shape[-1], b_shape[-2]) if b_transposed else b_shape[-2:]
    if k != kb:
        raise Unsupported(f"reduction mismatch {a_shape} x {b_shape}")
    try:
        batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    except ValueError as err:
        raise Unsupported(str(err)) from err
    a_strides = _batch_strides(a_shape[:-2], batch, m * k)
    b_strides = _batch_strides(b_shape[:-2], batch, k * n)
    return batch, m, n, k, a_strides, b_strides


def _transposed_rhs(tree: CallTree, b):
    """Absorb a permute_dims that swaps the last two axes of the right-hand side."""
    source, axes = _permutation(tree, b)
    rank = len(axes)
    if axes == tuple(range(rank)):
        return b, False
    if axes == tuple(range(rank - 2)) + (rank - 1, rank - 2):
        return source, True
    raise Unsupported(f"right-hand permute_dims {axes} is not a transpose of the last two axes")


def _gemm_spec(tree, matmul, dtype, out_dtype, a, b, b_transposed, **extra) -> GemmSpec:
    a_op, b_op = tree.operand(a), tree.operand(b)
    batch, m, n, k, a_strides, b_strides = _matmul_geometry(a_op.shape, b_op.shape, b_transposed)
    if dtype == "int8" and k > MAX_INT8_REDUCTION:
        raise Unsupported(f"int8 reduction k={k} could overflow the int32 accumulator")
    out_shape, _ = static_type(matmul)
    if out_shape != batch + (m, n):
        raise Unsupported(f"matmul output {out_shape} is not {batch + (m, n)}")
    contiguous = _contiguous_strides(batch + (m * k,))[:-1]
    if batch and not any(b_strides) and all(d == 1 or s == c for d, s, c in zip(batch, a_strides, contiguous)):
        # One shared B and contiguous A batches: a single GEMM with batch * m rows.
        batch, m, a_strides, b_strides = (), math.prod(batch) * m, (), ()
    return GemmSpec(dtype, out_dtype, batch, m, n, k, a_op, b_op, b_transposed,
                    a_strides, b_strides, **extra)


def _split_bias(tree, expr):
    """(matmul call, bias expr or None) for `matmul` or `add(matmul, bias)` in either order."""
    add = tree.call(expr, "relax.add")
    if add is None:
        return tree.call(expr, "relax.matmul"), None
    for candidate in add.args:
        matmul = tree.call(candidate, "relax.matmul")
        if matmul is not None:
            return matmul, _other_arg(add, candidate)
    raise Unsupported("add without a matmul operand")


def describe_gemm(tree: CallTree, root) -> GemmSpec:
    """matmul / matmul + bias in fp32 or int8 -> int32; QDQ and integer-requantized int8 forms."""
    op = root.op.name
    if op == "relax.quantize":
        return _describe_qdq_gemm(tree, root)
    if op == "relax.astype":
        return _describe_int_ops_gemm(tree, root)
    matmul, bias = _split_bias(tree, root)
    if matmul is None:
        raise Unsupported(f"{op} is not a GEMM root")
    (a, b_in), (_, out_dtype) = matmul.args, static_type(root)
    b, b_transposed = _transposed_rhs(tree, b_in)
    dtypes = (static_type(a)[1], static_type(b)[1], out_dtype)
    n_cols = static_type(matmul)[0][-1]
    if dtypes == ("float32", "float32", "float32"):
        bias_op = None if bias is None else tree.operand(bias)
        if bias_op is not None and (math.prod(bias_op.shape) != n_cols or bias_op.shape[-1] != n_cols):
            raise Unsupported(f"bias of shape {bias_op.shape} is not per-column for n={n_cols}")
        return _gemm_spec(tree, matmul, "float32", "float32", a, b, b_transposed, bias=bias_op)
    if dtypes == ("int8", "int8", "int32"):
        bias_values = None
        if bias is not None:
            bias_values = _column_vector(const_array(bias, "int32 bias"), n_cols, "bias").astype(np.int32)
        requant = reference.Requant("none", bias=bias_values, mul=None, add=None, shift=None)
        return _gemm_spec(tree, matmul, "int8", "int32", a, b, b_transposed, requant=requant)
    raise Unsupported(f"matmul dtypes {dtypes}")


def _dequantize_args(tree, expr, what):
    call = tree.call(expr, "relax.dequantize")
    if call is None:
        raise Unsupported(f"{what} is not dequantized")
    data, scale, zero_point = call.args
    if static_type(data)[1] != "int8":
        raise Unsupported(f"{what} is {static_type(data)[1]}, not int8")
    return data, const_array(scale, f"{what} scale"), const_array(zero_point, f"{what} zero point"), call


def per_tensor_quant(call, what: str) -> reference.Quant:
    """The constant scalar scale and zero point of a quantize to int8 or a dequantize of int8 to float32
    (what the element-wise kernels fold in), or Unsupported."""
    _, scale, zero_point = call.args
    scale = np.asarray(const_array(scale, f"{what} scale"), np.float32).reshape(-1)
    zero_point = np.asarray(const_array(zero_point, f"{what} zero point")).reshape(-1)
    if scale.size != 1 or zero_point.size != 1:
        raise Unsupported(f"{what} is quantized per channel")
    if not (np.isfinite(scale[0]) and scale[0] > 0):
        raise Unsupported(f"{what} scale {scale[0]} is not positive and finite")
    if not -128 <= int(zero_point[0]) <= 127 or zero_point[0] != int(zero_point[0]):
        raise Unsupported(f"{what} zero point {zero_point[0]} is not an int8 value")
    if call.op.name == "relax.quantize" and str(call.attrs.out_dtype) != "int8":
        raise Unsupported(f"{what} is quantized to {call.attrs.out_dtype}")
    if call.op.name == "relax.dequantize" and (str(call.attrs.out_dtype) != "float32"
                                               or static_type(call.args[0])[1] != "int8"):
        raise Unsupported(f"{what} is dequantized from {static_type(call.args[0])[1]} to {call.attrs.out_dtype}")
    return reference.Quant(float(scale[0]), int(zero_point[0]))


def _single_zero_point(values, what) -> int:
    values = np.asarray(values).reshape(-1)
    if not (values == values[0]).all():
        raise Unsupported(f"{what} zero points differ per channel")
    return int(values[0])


def _describe_qdq_gemm(tree, quantize) -> GemmSpec:
    if str(quantize.attrs.out_dtype) != "int8":
        raise Unsupported(f"quantize to {quantize.attrs.out_dtype}")
    y_scale = const_array(quantize.args[1], "output scale")
    y_zp = const_array(quantize.args[2], "output zero point")
    if y_scale.size != 1 or y_zp.size != 1:
        raise Unsupported("per-channel output quantization")
    matmul, bias = _split_bias(tree, quantize.args[0])
    if matmul is None:
        raise Unsupported("quantize of something other than a GEMM")
    a, a_scale, a_zp, _ = _dequantize_args(tree, matmul.args[0], "activation")
    b_dq, b_transposed = _transposed_rhs(tree, matmul.args[1])
    b, b_scale, b_zp, b_call = _dequantize_args(tree, b_dq, "weight")
    if a_scale.size != 1 or a_zp.size != 1:
        raise Unsupported("per-channel activation quantization")
    b_shape = static_type(b)[0]
    n = b_shape[-2] if b_transposed else b_shape[-1]
    if b_scale.size > 1:
        channel_axis = len(b_shape) - (2 if b_transposed else 1)
        if int(b_call.attrs.axis) % len(b_shape) != channel_axis:
            raise Unsupported(f"weight scales along axis {b_call.attrs.axis}, not the output channels")
    a_zp, b_zp = int(a_zp.reshape(())), _single_zero_point(b_zp, "weight")
    acc_scale, mul, shift = reference.qdq_requant(a_scale.reshape(()), _column_vector(b_scale, n, "weight scale"),
                                                  y_scale.reshape(()))
    bias_q = _quantized_bias(tree, bias, acc_scale, n)
    requant = reference.Requant("fixed", bias=bias_q, mul=mul, add=None, shift=shift,
                                out_zp=int(y_zp.reshape(())))
    return _fold_activation_zero_point(_gemm_spec(tree, matmul, "int8", "int8", a, b, b_transposed,
                                                  a_zp=a_zp, b_zp=b_zp, requant=requant))


def _fold_activation_zero_point(spec: GemmSpec) -> GemmSpec:
    """With a constant B shared by every batch, a_zp's share of the accumulator, -a_zp * sum_k (B - b_zp)
    per column, is a constant: fold it into the bias, so the kernel sums no columns of B at run time
    (and the NPU, which takes no activation zero point, can run the layer)."""
    offsets = set(spec.batch_offsets("b"))
    if not spec.a_zp or not spec.b.is_const or len(offsets) != 1:
        return spec
    start = offsets.pop()
    b = np.asarray(spec.b.const, np.int64).reshape(-1)[start:start + spec.k * spec.n]
    b = b.reshape(spec.n, spec.k).T if spec.b_transposed else b.reshape(spec.k, spec.n)
    bias = np.zeros(spec.n, np.int64) if spec.requant.bias is None else spec.requant.bias.astype(np.int64)
    folded = _checked_int32(bias - spec.a_zp * (b - spec.b_zp).sum(axis=0), "folded bias")
    return dataclasses.replace(spec, a_zp=0, requant=dataclasses.replace(spec.requant, bias=folded))


def _checked_int32(values: np.ndarray, what: str) -> np.ndarray:
    if values.min(initial=0) < -(2**31) or values.max(initial=0) >= 2**31:
        raise Unsupported(f"{what} does not fit int32")
    return values.astype(np.int32)


def _quantized_bias(tree, bias, acc_scale, n):
    """A float or dequantized-int32 bias as int32 in accumulator units, round half to even."""
    if bias is None:
        return None
    dequantize = tree.call(bias, "relax.dequantize")
    if dequantize is not None:
        values = const_array(dequantize.args[0], "bias").astype(np.float64)
        scale = const_array(dequantize.args[1], "bias scale").astype(np.float64)
        zero = const_array(dequantize.args[2], "bias zero point").astype(np.float64)
        real = (_column_vector(values, n, "bias") - _column_vector(zero, n, "bias zero point")) \
            * _column_vector(scale, n, "bias scale")
    else:
        real = _column_vector(const_array(bias, "bias").astype(np.float64), n, "bias")
    return _checked_int32(np.rint(real / acc_scale), "quantized bias")


def _int_scalar(expr) -> int:
    """An integer attribute-like argument (clip bounds arrive as IntImm)."""
    if not isinstance(getattr(expr, "value", None), int):
        raise Unsupported(f"{expr} is not an integer constant")
    return int(expr.value)


def _describe_int_ops_gemm(tree, astype) -> GemmSpec:
    if str(astype.attrs.dtype) != "int8":
        raise Unsupported(f"requantized output {astype.attrs.dtype}")
    clip = tree.call(astype.args[0], "relax.clip")
    if clip is None:
        raise Unsupported("astype(int8) without clip")
    lo, hi = _int_scalar(clip.args[1]), _int_scalar(clip.args[2])
    if not -128 <= lo <= hi <= 127:
        raise Unsupported(f"clip bounds [{lo}, {hi}] exceed int8")
    expr = clip.args[0]
    steps: dict[str, np.ndarray] = {}
    # From the output inwards: [add out_zp] right_shift [add] [multiply] [add bias] matmul.
    for name, op in (("out_zp", "relax.add"), ("shift", "relax.right_shift"), ("add", "relax.add"),
                     ("mul", "relax.multiply"), ("bias", "relax.add")):
        call = tree.call(expr, op)
        if call is None:
            continue
        inner = call.args[0] if op == "relax.right_shift" else None
        if inner is None:
            inner = next((arg for arg in call.args if not isinstance(arg, tvm.ir.expr.Constant)), None)
        if inner is None:
            raise Unsupported(f"{op} of two constants")
        constant = _other_arg(call, inner)
        values = const_array(constant, f"requantization {name}")
        if values.dtype != np.int32:
            raise Unsupported(f"requantization {name} is {values.dtype}, not int32")
        steps[name], expr = values, inner
    matmul = tree.call(expr, "relax.matmul")
    if matmul is None or "shift" not in steps:
        raise Unsupported("integer requantization is not matmul ... right_shift -> clip -> astype")
    a, b_in = matmul.args
    b, b_transposed = _transposed_rhs(tree, b_in)
    if (static_type(a)[1], static_type(b)[1], static_type(matmul)[1]) != ("int8", "int8", "int32"):
        raise Unsupported("integer requantization of a matmul that is not int8 x int8 -> int32")
    n = static_type(matmul)[0][-1]
    vectors = {name: _column_vector(v, n, name).astype(np.int32) for name, v in steps.items() if name != "out_zp"}
    if vectors["shift"].min() < 0 or vectors["shift"].max() > 31:
        raise Unsupported(f"right_shift amounts {vectors['shift'].min()}..{vectors['shift'].max()}")
    out_zp = steps.get("out_zp", np.zeros(1, np.int32))
    if out_zp.size != 1:
        raise Unsupported("per-channel add after the shift")
    requant = reference.Requant("int_ops", bias=vectors.get("bias"), mul=vectors.get("mul"),
                                add=vectors.get("add"), shift=vectors["shift"],
                                out_zp=int(out_zp.reshape(())), lo=lo, hi=hi)
    return _gemm_spec(tree, matmul, "int8", "int8", a, b, b_transposed, requant=requant)


# ---------------------------------------------------------------- softmax


def describe_softmax(tree: CallTree, root) -> SoftmaxSpec:
    x = tree.operand(root.args[0])
    if x.dtype != "float32":
        raise Unsupported(f"softmax of {x.dtype}")
    if int(root.attrs.axis) % len(x.shape) != len(x.shape) - 1:
        raise Unsupported(f"softmax over axis {root.attrs.axis}, not the last")
    return SoftmaxSpec(x, rows=math.prod(x.shape[:-1]), cols=x.shape[-1])


# ---------------------------------------------------------------- attention
#
# Q, K, V reach the kernel through chains of layout ops (permute_dims, reshape, repeat, ...) and, for
# int8, a per-tensor dequantize; the output leaves through permute_dims / reshape and, for int8, a
# quantize. views.py turns each chain into strides over the tensor it starts from, so the kernel reads
# and writes those tensors in place and a repeat of K/V heads (grouped-query attention) costs nothing.

# A constant additive mask is causal masking when it is 0 where keys are visible and at most this
# (or -inf) where they are not, and every row sees a key: exp(score - 1e9 - max) is 0 in float32.
CAUSAL_MASK_THRESHOLD = -1e9
MAX_ATTENTION_DIM = 16384  # int8 scores stay below 2**30


@dataclass(frozen=True)
class _Resolved:
    """An operand seen through its layout chain: the tensor it starts from, the view, the scale and
    zero point of a dequantize on the way (int8), and the product of the scalar multiplies on the way."""

    source: object
    view: views.View
    dequantize: tuple[float, int] | None
    factor: float = 1.0
    dequantize_call: object = None


def _scalar(values: np.ndarray, what: str):
    if values.size != 1:
        raise Unsupported(f"{what} is not per tensor")
    return values.reshape(())


def _scalar_multiply(call):
    """(x, c) of `multiply(x, c)` / `multiply(c, x)` with a scalar float32 constant c that does not
    broadcast x, else None."""
    if call.op.name != "relax.multiply":
        return None
    consts = [a for a in call.args if isinstance(a, tvm.ir.expr.Constant)]
    if len(consts) != 1 or static_type(consts[0])[1] != "float32" or consts[0].value.numpy().size != 1:
        return None
    tensor = _other_arg(call, consts[0])
    if static_type(tensor)[0] != static_type(call)[0]:
        return None
    return tensor, float(consts[0].value.numpy().reshape(()))


def _resolve(tree: CallTree, expr, scaled: bool = False) -> _Resolved:
    """Follow layout ops (and one dequantize; with `scaled`, scalar multiplies) inside the match from
    `expr` back to a parameter or constant, then replay them forward as a view of it."""
    chain, cur = [], expr
    while True:
        call = tree.call(cur)
        if call is not None and scaled and _scalar_multiply(call) is not None:
            chain.append(call)
            cur = _scalar_multiply(call)[0]
            continue
        if call is None:
            break
        if call.op.name not in views.VIEW_OPS + ("relax.dequantize",):  # e.g. a multiply by a tensor
            raise Unsupported(f"attention operand through {call.op.name}, which is no view")
        chain.append(call)
        cur = call.args[0]
    view = views.contiguous(static_type(cur)[0])
    dq, dq_call, factor = None, None, 1.0
    try:
        for call in reversed(chain):
            op, out_shape = call.op.name, static_type(call)[0]
            if op == "relax.multiply":
                factor *= _scalar_multiply(call)[1]
            elif op == "relax.permute_dims":
                axes = call.attrs.axes
                view = views.permute(view, None if axes is None else [int(a) for a in axes])
            elif op == "relax.repeat":
                if call.attrs.axis is None:
                    raise Unsupported("repeat of the flattened tensor")
                view = views.repeat(view, int(call.attrs.repeats), int(call.attrs.axis))
            elif op == "relax.tile":
                view = views.tile(view, [int(r) for r in call.attrs.repeats])
            elif op == "relax.broadcast_to":
                view = views.broadcast_to(view, out_shape)
            elif op == "relax.dequantize":
                if dq is not None:
                    raise Unsupported("two dequantize ops on one operand")
                scale = float(_scalar(const_array(call.args[1], "dequantize scale"), "dequantize scale"))
                zp = int(_scalar(const_array(call.args[2], "dequantize zero point"), "dequantize zero point"))
                dq, dq_call = (scale, zp), call
            else:  # reshape, expand_dims, squeeze
                view = views.reshape(view, out_shape)
            if views.shape_of(view) != out_shape:
                raise Unsupported(f"{op}: view of shape {views.shape_of(view)}, expected {out_shape}")
    except views.ViewError as err:
        raise Unsupported(str(err)) from err
    return _Resolved(cur, view, dq, factor, dq_call)


def _output_view(tree: CallTree, root):
    """The view of the final tensor that the attention result is, walking permute_dims / reshape (and
    one quantize) from the root inwards. Returns (view, inner expr, quantize call or None)."""
    view = views.contiguous(static_type(root)[0])
    quantize, cur = None, root
    try:
        while True:
            call = tree.call(cur)
            if call is None:
                break
            op = call.op.name
            if op == "relax.permute_dims":
                axes = call.attrs.axes
                view = views.inverse_permute(view, None if axes is None else [int(a) for a in axes])
            elif op in ("relax.reshape", "relax.expand_dims", "relax.squeeze"):
                view = views.reshape(view, static_type(call.args[0])[0])
            elif op == "relax.quantize" and quantize is None:
                quantize = call
            else:
                break
            cur = call.args[0]
    except views.ViewError as err:
        raise Unsupported(str(err)) from err
    if any(not a.plain or a.broadcast and a.size > 1 for a in view):
        raise Unsupported("attention output is not a plain strided view")
    return view, cur, quantize


def _pad(view: views.View, rank: int) -> views.View:
    return tuple(views.Axis(1, 0) for _ in range(rank - len(view))) + view


def _strides_of(view: views.View, roles, what: str, head_map: bool = False):
    """Strides of a (batch, head, seq, feat) view; roles index the view (None: absent). With
    head_map, the head axis may map heads onto fewer K/V heads: returns (Strides, kv_div, kv_heads)."""
    def axis(role):
        return views.Axis(1, 0) if role is None else view[role]

    batch, head, seq, feat = (axis(r) for r in roles)
    for name, a in (("batch", batch), ("sequence", seq), ("feature", feat)) + (() if head_map else (("head", head),)):
        if not a.plain:
            raise Unsupported(f"{what}: its {name} axis repeats ({a})")
    strides = Strides(batch.stride, head.stride, seq.stride, feat.stride)
    if not head_map:
        return strides
    return strides, head.div, head.mod


def describe_attention(tree: CallTree, root) -> AttentionSpec:
    view, inner, quantize = _output_view(tree, root)
    out_shape = static_type(root)[0]
    call = tree.call(inner)
    if call is not None and call.op.name in ("relax.nn.attention", "relax.nn.attention_bias"):
        return _describe_attention_op(tree, call, view, out_shape, quantize)
    return _describe_attention_chain(tree, inner, view, out_shape, quantize)


def _mask_operand(tree, mask, q_len, kv_len, batch, heads):
    """The additive mask broadcast onto (batch, head, q, kv), right-aligned."""
    operand = tree.operand(mask)
    shape = operand.shape
    if operand.dtype != "float32":
        raise Unsupported(f"attention mask of {operand.dtype}")
    if len(shape) > 4:
        raise Unsupported(f"mask of rank {len(shape)}")
    full = (1,) * (4 - len(shape)) + shape
    target = (batch, heads, q_len, kv_len)
    if any(d not in (1, t) for d, t in zip(full, target)):
        raise Unsupported(f"mask of shape {shape} does not broadcast to {target}")
    contiguous = _contiguous_strides(full)
    return operand, Strides(*(0 if d == 1 else s for d, s in zip(full, contiguous)))


def causal_mask_kind(values: np.ndarray, q_len: int, kv_len: int) -> str | None:
    """"top_left" or "bottom_right" if a constant additive mask is that causal masking (see
    CAUSAL_MASK_THRESHOLD), else None."""
    values = np.asarray(values)
    if values.size != q_len * kv_len or values.shape[-2:] != (q_len, kv_len):
        return None
    values = values.reshape(q_len, kv_len).astype(np.float64)
    i, j = np.arange(q_len)[:, None], np.arange(kv_len)[None, :]
    for kind, visible in (("top_left", j <= i), ("bottom_right", j <= i + kv_len - q_len)):
        if (visible.any(axis=1).all() and (values[visible] == 0).all()
                and (values[~visible] <= CAUSAL_MASK_THRESHOLD).all()):
            return kind
    return None


def _finish(tree, *, q, k, v, mask_expr, out_view, out_shape, out_roles, quantize, heads, kv_div, kv_heads, batch,
            q_len, kv_len, qk_dim, v_dim, scale, causal, q_strides, k_strides, v_strides) -> AttentionSpec:
    """The spec, once operands and views are known: the mask (or the causal masking it is), the
    output strides, and the int8 constants when the inputs are dequantized and the output quantized."""
    mask = mask_strides = None
    if mask_expr is not None:
        mask, mask_strides = _mask_operand(tree, mask_expr, q_len, kv_len, batch, heads)
        if causal == "none" and mask.is_const and causal_mask_kind(mask.const, q_len, kv_len):
            causal, mask, mask_strides = causal_mask_kind(mask.const, q_len, kv_len), None, None
    out_strides = _strides_of(out_view, out_roles, "attention output")
    operands = {name: tree.operand(r.source) for name, r in (("q", q), ("k", k), ("v", v))}
    dequantized = [r.dequantize is not None for r in (q, k, v)]
    common = dict(q=operands["q"], k=operands["k"], v=operands["v"], mask=mask, q_strides=q_strides,
                  k_strides=k_strides, v_strides=v_strides, mask_strides=mask_strides, out_strides=out_strides,
                  out_shape=out_shape, batch=batch, heads=heads, kv_heads=kv_heads, q_len=q_len, kv_len=kv_len,
                  qk_dim=qk_dim, v_dim=v_dim, scale=scale, causal=causal, kv_div=kv_div)
    if quantize is None and q.dequantize is None:
        # fp32 attention; K and V may be int8 that the kernel dequantizes in L1
        dequant = {name: per_tensor_quant(r.dequantize_call, f"attention {name}")
                   for name, r in (("k", k), ("v", v)) if r.dequantize is not None}
        for name, op in (*operands.items(), ("mask", mask)):
            if op is not None and op.dtype != ("int8" if name in dequant else "float32"):
                raise Unsupported(f"attention {name} of {op.dtype}")
        return AttentionSpec(**common, k_dequant=dequant.get("k"), v_dequant=dequant.get("v"))
    if quantize is None or not all(dequantized):
        raise Unsupported("int8 attention needs dequantized Q, K, V and a quantized output")
    if any(op.dtype != "int8" for op in operands.values()) or str(quantize.attrs.out_dtype) != "int8":
        raise Unsupported("quantized attention other than int8")
    if mask is not None:
        raise Unsupported("int8 attention with an additive mask other than causal masking")
    if qk_dim > MAX_ATTENTION_DIM or scale < 0:
        raise Unsupported(f"int8 attention with qk_dim {qk_dim}, scale {scale}")
    out_scale = float(_scalar(const_array(quantize.args[1], "output scale"), "output scale"))
    out_zp = int(_scalar(const_array(quantize.args[2], "output zero point"), "output zero point"))
    try:
        quant = reference.attention_quant(q.dequantize[0], k.dequantize[0], v.dequantize[0], out_scale,
                                          q.dequantize[1], k.dequantize[1], v.dequantize[1], out_zp, scale, kv_len)
    except ValueError as err:
        raise Unsupported(str(err)) from err
    return AttentionSpec(**common, dtype="int8", quant=quant)


def _describe_attention_op(tree, call, out_view, out_shape, quantize) -> AttentionSpec:
    attrs = call.attrs
    if attrs.window_size is not None:
        raise Unsupported("sliding-window attention")
    q, k, v = (_resolve(tree, arg) for arg in call.args[:3])
    for name, r in (("q", q), ("k", k), ("v", v)):
        if len(r.view) != 4:
            raise Unsupported(f"attention {name} of rank {len(r.view)}")
    bshd = (0, 2, 1, 3)
    (batch, q_len, heads, qk_dim), (_, kv_len, kv_view_heads, _) = views.shape_of(q.view), views.shape_of(k.view)
    v_dim = v.view[3].size
    q_strides = _strides_of(q.view, bshd, "attention q")
    k_strides, k_div, k_mod = _strides_of(k.view, bshd, "attention k", head_map=True)
    v_strides, v_div, v_mod = _strides_of(v.view, bshd, "attention v", head_map=True)
    if (k_div, k_mod) != (v_div, v_mod):
        raise Unsupported("K and V map heads differently")
    # TVM pairs query head h with K/V head h % kv_view_heads; an exact head axis keeps that as
    # ((h % n) // div) % mod == (h // div) % mod (n == div * mod).
    if kv_view_heads != heads and not (k.view[2].broadcast or k.view[2].div * k.view[2].mod == kv_view_heads):
        raise Unsupported("K/V head axis does not map heads exactly")
    scale = 1.0 / math.sqrt(qk_dim) if attrs.scale is None else float(attrs.scale.value)
    causal = {None: "none", "TopLeft": "top_left", "BottomRight": "bottom_right"}[attrs.causal_mask]
    # TVM's BottomRight is tril(k=|S - L|): with more queries than keys it shows *more* keys than the
    # kernel's "j <= i + L - S", so that case stays in TVM.
    if causal == "bottom_right" and q_len > kv_len:
        raise Unsupported(f"attention causal_mask=BottomRight with {q_len} queries over {kv_len} keys")
    if len(out_view) != 4:
        raise Unsupported("attention output of rank other than 4")
    return _finish(tree, q=q, k=k, v=v, mask_expr=call.args[3] if len(call.args) > 3 else None, out_view=out_view,
                   out_shape=out_shape,
                   out_roles=bshd, quantize=quantize, heads=heads, kv_div=k_div, kv_heads=k_mod, batch=batch,
                   q_len=q_len, kv_len=kv_len, qk_dim=qk_dim, v_dim=v_dim, scale=scale, causal=causal,
                   q_strides=q_strides, k_strides=k_strides, v_strides=v_strides)


def _lead_roles(rank):
    """Axis indices of (batch, head) among the leading dims of a rank-`rank` attention operand."""
    if rank == 4:
        return 0, 1
    if rank == 3:
        return None, 0
    if rank == 2:
        return None, None
    raise Unsupported(f"attention operand of rank {rank}")


def _unguarded(tree, probs):
    """The softmax behind SDPA's guard `where(isnan(p), 0, p)`, or `probs` when there is no guard."""
    where = tree.call(probs, "relax.where")
    if where is None:
        return probs
    cond, zero, p = where.args
    isnan = tree.call(cond, "relax.isnan")
    if isnan is None or not isnan.args[0].same_as(p) or np.any(const_array(zero, "softmax guard value") != 0):
        raise Unsupported("where() after the softmax is not the guard where(isnan(p), 0, p)")
    return p


def _describe_attention_chain(tree, inner, out_view, out_shape, quantize) -> AttentionSpec:
    pv = tree.call(inner, "relax.matmul")
    if pv is None:
        raise Unsupported("attention chain does not end in matmul(P, V)")
    softmax = tree.call(_unguarded(tree, pv.args[0]), "relax.nn.softmax")
    if softmax is None:
        raise Unsupported("attention chain without softmax")
    pv_shape = static_type(pv)[0]
    rank = len(pv_shape)
    if int(softmax.attrs.axis) % rank != rank - 1:
        raise Unsupported("softmax not over the key axis")
    scores, mask_expr = softmax.args[0], None
    add = tree.call(scores, "relax.add")
    if add is not None:
        inner_scores = next((a for a in add.args if tree.call(a) is not None), None)
        if inner_scores is None:
            raise Unsupported("mask add without a score operand")
        scores, mask_expr = inner_scores, _other_arg(add, inner_scores)
    scale = 1.0
    for op, invert in (("relax.multiply", False), ("relax.divide", True)):
        call = tree.call(scores, op)
        if call is None:
            continue
        factor_inner = call.args[0] if invert else next((a for a in call.args if tree.call(a) is not None), None)
        if factor_inner is None:
            raise Unsupported("scale of two constants")
        factor = const_array(_other_arg(call, factor_inner), "attention scale")
        if factor.size != 1:
            raise Unsupported("attention scale is not a scalar")
        scale = 1.0 / float(factor.reshape(())) if invert else float(factor.reshape(()))
        scores = factor_inner
    qk = tree.call(scores, "relax.matmul")
    if qk is None:
        raise Unsupported("attention chain does not start with matmul(Q, K^T)")
    q, kt = _resolve(tree, qk.args[0], scaled=True), _resolve(tree, qk.args[1], scaled=True)
    v = _resolve(tree, pv.args[1])
    scale *= q.factor * kt.factor
    if rank < 2 or any(len(r.view) < 2 for r in (q, kt, v)) or len(out_view) != rank:
        raise Unsupported("attention chain of vectors")
    q_len, qk_dim = q.view[-2].size, q.view[-1].size
    kv_len, v_dim = kt.view[-1].size, v.view[-1].size
    if kt.view[-2].size != qk_dim or v.view[-2].size != kv_len or pv_shape[-2:] != (q_len, v_dim):
        raise Unsupported("attention chain shapes do not line up")
    lead = pv_shape[:-2]
    padded = []
    for r in (q, kt, v):
        view = _pad(r.view, rank)
        for a, n in zip(view[:-2], lead):
            if a.size not in (1, n):
                raise Unsupported("attention operand lead dims do not broadcast")
        # size-1 lead dims broadcast against the output's
        padded.append(tuple(views.Axis(n, 0) if a.size == 1 else a for a, n in zip(view[:-2], lead)) + view[-2:])
    qv, ktv, vv = padded
    batch_role, head_role = _lead_roles(rank)
    batch = lead[0] if rank == 4 else 1
    heads = lead[-1] if rank >= 3 else 1
    q_strides = _strides_of(qv, (batch_role, head_role, rank - 2, rank - 1), "attention q")
    k_strides, k_div, k_mod = _strides_of(ktv, (batch_role, head_role, rank - 1, rank - 2), "attention k", True)
    v_strides, v_div, v_mod = _strides_of(vv, (batch_role, head_role, rank - 2, rank - 1), "attention v", True)
    if (k_div, k_mod) != (v_div, v_mod):
        raise Unsupported("K and V map heads differently")
    return _finish(tree, q=q, k=kt, v=v, mask_expr=mask_expr, out_view=out_view, out_shape=out_shape,
                   out_roles=(batch_role, head_role, rank - 2, rank - 1), quantize=quantize, heads=heads,
                   kv_div=k_div, kv_heads=k_mod, batch=batch, q_len=q_len, kv_len=kv_len, qk_dim=qk_dim,
                   v_dim=v_dim, scale=scale, causal="none", q_strides=q_strides, k_strides=k_strides,
                   v_strides=v_strides)
