"""Matched Relax call trees -> op specs (plain data).

The same functions serve the pattern checks (a raised `Unsupported` means "leave it in TVM") and the
codegen (which receives the composite functions those checks accepted), so the two cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import tvm
from tvm import relax

from . import reference
from .specs import AttentionSpec, GemmSpec, Operand, OpSpec, SoftmaxSpec, Strides

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
    # Real multiplier per output column: float32 scales, exact float64 arithmetic.
    acc_scale = np.float64(a_scale.reshape(())) * _column_vector(b_scale, n, "weight scale").astype(np.float64)
    mul, shift = reference.quantize_multiplier(acc_scale / np.float64(y_scale.reshape(())))
    bias_q = _quantized_bias(tree, bias, acc_scale, n)
    spec_a_zp = a_zp
    b_values = tree.operand(b).const
    if a_zp and b_values is not None and b_values.ndim == 2:
        # Fold -a_zp * sum_k (B - b_zp) into the bias so the kernel skips the column sums at run time.
        columns = b_values.astype(np.int64) - b_zp
        col_sums = columns.sum(axis=1 if b_transposed else 0)
        bias_q = (np.zeros(n, np.int64) if bias_q is None else bias_q.astype(np.int64)) - a_zp * col_sums
        bias_q = _checked_int32(bias_q, "folded bias")
        spec_a_zp = 0
    requant = reference.Requant("fixed", bias=bias_q, mul=mul, add=None, shift=shift,
                                out_zp=int(y_zp.reshape(())))
    return _gemm_spec(tree, matmul, "int8", "int8", a, b, b_transposed,
                      a_zp=spec_a_zp, b_zp=b_zp, requant=requant)


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


def _view_strides(tree, expr, roles):
    """Operand and Strides of `expr` (possibly a permute_dims in the match) for axis roles
    (batch, head, seq, feat), each an axis index into the view or None (broadcast / absent)."""
    source, axes = _permutation(tree, expr)
    operand = tree.operand(source)
    contiguous = _contiguous_strides(operand.shape)
    view = [contiguous[a] for a in axes]
    return operand, Strides(*(0 if r is None else view[r] for r in roles))


def _lead_roles(rank):
    """Axis indices of (batch, head) among the leading dims of a rank-`rank` attention operand."""
    if rank == 4:
        return 0, 1
    if rank == 3:
        return None, 0
    if rank == 2:
        return None, None
    raise Unsupported(f"attention operand of rank {rank}")


def describe_attention(tree: CallTree, root) -> AttentionSpec:
    if root.op.name in ("relax.nn.attention", "relax.nn.attention_bias"):
        return _describe_attention_op(tree, root)
    return _describe_attention_chain(tree, root)


def _check_float32(*operands):
    for op in operands:
        if op is not None and op.dtype != "float32":
            raise Unsupported(f"attention operand of {op.dtype}")


def _mask_operand(tree, mask, q_len, kv_len, batch, heads):
    """The additive mask broadcast onto (batch, head, q, kv), right-aligned."""
    operand = tree.operand(mask)
    shape = operand.shape
    if len(shape) > 4:
        raise Unsupported(f"mask of rank {len(shape)}")
    full = (1,) * (4 - len(shape)) + shape
    target = (batch, heads, q_len, kv_len)
    if any(d not in (1, t) for d, t in zip(full, target)):
        raise Unsupported(f"mask of shape {shape} does not broadcast to {target}")
    contiguous = _contiguous_strides(full)
    return operand, Strides(*(0 if d == 1 else s for d, s in zip(full, contiguous)))


def _describe_attention_op(tree, call) -> AttentionSpec:
    attrs = call.attrs
    if attrs.window_size is not None:
        raise Unsupported("sliding-window attention")
    bshd = (0, 2, 1, 3)
    q, q_strides = _view_strides(tree, call.args[0], bshd)
    k, k_strides = _view_strides(tree, call.args[1], bshd)
    v, v_strides = _view_strides(tree, call.args[2], bshd)
    (batch, q_len, heads, qk_dim), (_, kv_len, kv_heads, _), v_dim = q.shape, k.shape, v.shape[-1]
    if heads != kv_heads:
        # TVM's legalization pairs query head h with K/V head h % kv_heads, not the grouped-query
        # h // (heads / kv_heads) our kernel implements: offloading would change the result.
        raise Unsupported(f"{heads} query heads over {kv_heads} key/value heads")
    mask, mask_strides = None, None
    if len(call.args) > 3:
        mask, mask_strides = _mask_operand(tree, call.args[3], q_len, kv_len, batch, heads)
    _check_float32(q, k, v, mask)
    out_shape = static_type(call)[0]
    scale = 1.0 / math.sqrt(qk_dim) if attrs.scale is None else float(attrs.scale.value)
    causal = {None: "none", "TopLeft": "top_left", "BottomRight": "bottom_right"}[attrs.causal_mask]
    out_strides = Strides(*(_contiguous_strides(out_shape)[a] for a in bshd))
    return AttentionSpec(q, k, v, mask, q_strides, k_strides, v_strides, mask_strides, out_strides,
                         out_shape, batch, heads, kv_heads, q_len, kv_len, qk_dim, v_dim, scale, causal)


def _describe_attention_chain(tree, root) -> AttentionSpec:
    out_source, out_axes = _permutation(tree, root)
    pv = tree.call(out_source, "relax.matmul")
    if pv is None:
        raise Unsupported("attention chain does not end in matmul(P, V)")
    softmax = tree.call(pv.args[0], "relax.nn.softmax")
    if softmax is None:
        raise Unsupported("attention chain without softmax")
    rank = len(static_type(pv)[0])
    if int(softmax.attrs.axis) % rank != rank - 1:
        raise Unsupported("softmax not over the key axis")
    scores, mask_expr = softmax.args[0], None
    add = tree.call(scores, "relax.add")
    if add is not None:
        inner = next((a for a in add.args if tree.call(a) is not None), None)
        if inner is None:
            raise Unsupported("mask add without a score operand")
        scores, mask_expr = inner, _other_arg(add, inner)
    scale = 1.0
    for op, invert in (("relax.multiply", False), ("relax.divide", True)):
        call = tree.call(scores, op)
        if call is None:
            continue
        inner = call.args[0] if invert else next((a for a in call.args if tree.call(a) is not None), None)
        if inner is None:
            raise Unsupported("scale of two constants")
        factor = const_array(_other_arg(call, inner), "attention scale")
        if factor.size != 1:
            raise Unsupported("attention scale is not a scalar")
        scale = 1.0 / float(factor.reshape(())) if invert else float(factor.reshape(()))
        scores = inner
    qk = tree.call(scores, "relax.matmul")
    if qk is None:
        raise Unsupported("attention chain does not start with matmul(Q, K^T)")
    lead = _lead_roles(rank)
    q, q_strides = _view_strides(tree, qk.args[0], lead + (rank - 2, rank - 1))
    k, k_strides = _view_strides(tree, qk.args[1], lead + (rank - 1, rank - 2))
    v, v_strides = _view_strides(tree, pv.args[1], lead + (rank - 2, rank - 1))
    pv_shape = static_type(pv)[0]
    lead_shape = pv_shape[:-2]
    for expr in (qk.args[0], qk.args[1], pv.args[1]):
        if static_type(expr)[0][:-2] != lead_shape:
            raise Unsupported("attention operands with broadcast batch or head dims")
    batch = lead_shape[0] if rank == 4 else 1
    heads = lead_shape[-1] if rank >= 3 else 1
    q_len, qk_dim = static_type(qk.args[0])[0][-2:]
    kv_len, v_dim = static_type(pv.args[1])[0][-2:]
    mask, mask_strides = None, None
    if mask_expr is not None:
        mask, mask_strides = _mask_operand(tree, mask_expr, q_len, kv_len, batch, heads)
    _check_float32(q, k, v, mask)
    # The output is written straight into the (possibly permuted) result tensor.
    out_shape = static_type(root)[0]
    final = _contiguous_strides(out_shape)
    result_strides = [0] * rank
    for position, axis in enumerate(out_axes):
        result_strides[axis] = final[position]
    roles = lead + (rank - 2, rank - 1)
    out_strides = Strides(*(0 if r is None else result_strides[r] for r in roles))
    return AttentionSpec(q, k, v, mask, q_strides, k_strides, v_strides, mask_strides, out_strides,
                         out_shape, batch, heads, heads, q_len, kv_len, qk_dim, v_dim, scale, "none")


DESCRIBERS = {"gemm": describe_gemm, "softmax": describe_softmax, "attention": describe_attention}


def describe(kind: str, tree: CallTree, root) -> OpSpec:
    """The spec of a match of the pattern family `kind` rooted at `root`."""
    return DESCRIBERS[kind](tree, root)
