"""Rotary embedding on interleaved pairs, as Llama's builder (lm/llama.py) and llama2.c write it:
x [tokens, heads * head_dim] (fp32, or a dequantized int8 tensor) reshaped to [tokens, heads, half, 2],
y0 = x0 * cos - x1 * sin, y1 = x0 * sin + x1 * cos, concatenated back to [tokens, heads, half, 2];
cos and sin [tokens or 1, 1, half, 1] (constants for a prompt, the position's row for a decode step)
-> `dpl_rope`, (token, head) rows split over the cores."""

from __future__ import annotations

from dataclasses import dataclass

from tvm.relax.dpl import is_const, is_op, is_tuple, wildcard

from ...plan.engines import plan_on_cores
from .. import reference
from ..describe import CallTree, Unsupported, per_tensor_quant, static_type
from ..registry import Family, register
from ..specs import Operand


@dataclass(frozen=True)
class RopeSpec:
    """y [tokens, heads, half, 2] float32 from x (float32, or int8 dequantized with `x_quant`) and cos, sin
    [tokens or 1, 1, half, 1]; `cs_token_stride` is half, or 0 when one cos/sin row serves every token."""

    x: Operand
    cos: Operand
    sin: Operand
    tokens: int
    heads: int
    half: int
    cs_token_stride: int
    x_quant: reference.Quant | None = None

    kind = "rope"


def rope_pattern():
    x = is_op("relax.dequantize")(wildcard(), is_const(), is_const()) | wildcard()
    pairs = is_op("relax.reshape")(x, wildcard())
    x0 = is_op("relax.strided_slice")(pairs, wildcard(), wildcard(), wildcard())
    x1 = is_op("relax.strided_slice")(pairs, wildcard(), wildcard(), wildcard())
    cos, sin = wildcard(), wildcard()
    multiply = is_op("relax.multiply")
    y0 = is_op("relax.subtract")(multiply(x0, cos), multiply(x1, sin))
    y1 = is_op("relax.add")(multiply(x0, sin), multiply(x1, cos))
    return is_op("relax.concat")(is_tuple([y0, y1]))


def _ints(expr) -> list[int]:
    return [int(getattr(f, "value", f)) for f in expr.fields]


def _slice_start(tree: CallTree, expr) -> int:
    """The start of a one-element slice of the last axis of the pairs (0: x0, 1: x1), or Unsupported."""
    call = tree.call(expr, "relax.strided_slice")
    rank = len(static_type(call.args[0])[0])
    axes, begin, end = (_ints(arg) for arg in call.args[1:4])
    if [a % rank for a in axes] != [rank - 1] or len(begin) != 1 or end != [begin[0] + 1]:
        raise Unsupported(f"rotary slice axes={axes} begin={begin} end={end}, not one element of the pairs")
    return begin[0]


def describe(tree: CallTree, root) -> RopeSpec:
    out_shape, dtype = static_type(root)
    if len(out_shape) != 4 or out_shape[-1] != 2 or dtype != "float32":
        raise Unsupported(f"rotary output {dtype}{list(out_shape)}, not [tokens, heads, half, 2] float32")
    if int(root.attrs.axis) % 4 != 3:
        raise Unsupported(f"rotary halves concatenated on axis {root.attrs.axis}")
    y0, y1 = (tree.call(f) for f in root.args[0].fields)
    x0_cos, x1_sin = (tree.call(a) for a in y0.args)
    x0_sin, x1_cos = (tree.call(a) for a in y1.args)
    if [_slice_start(tree, m.args[0]) for m in (x0_cos, x1_sin, x0_sin, x1_cos)] != [0, 1, 0, 1]:
        raise Unsupported("rotary pairs not rotated as (x0, x1)")
    cos_expr, sin_expr = x0_cos.args[1], x1_sin.args[1]
    tokens, heads, half, _ = out_shape
    cos, sin = tree.operand(cos_expr), tree.operand(sin_expr)
    for name, op in (("cos", cos), ("sin", sin)):
        if op.dtype != "float32" or op.shape not in ((tokens, 1, half, 1), (1, 1, half, 1)):
            raise Unsupported(f"rotary {name} {op.dtype}{list(op.shape)}, not [{tokens} or 1, 1, {half}, 1]")
    if cos.shape != sin.shape:
        raise Unsupported(f"rotary cos {list(cos.shape)} and sin {list(sin.shape)} differ")
    pairs = tree.call(tree.call(x0_cos.args[0]).args[0], "relax.reshape")
    x_expr, x_quant = pairs.args[0], None
    dequantize = tree.call(x_expr, "relax.dequantize")
    if dequantize is not None:
        x_quant = per_tensor_quant(dequantize, "the rotated input")
        x_expr = dequantize.args[0]
    x = tree.operand(x_expr)
    if x.is_const or (x_quant is None and x.dtype != "float32"):
        raise Unsupported(f"rotary input {'constant' if x.is_const else x.dtype}")
    cs_stride = half if cos.shape[0] == tokens and tokens > 1 else 0
    return RopeSpec(x, cos, sin, tokens, heads, half, cs_stride, x_quant)


def plan(spec: RopeSpec, platform) -> dict:
    rows, costs = spec.tokens * spec.heads, platform.cluster_costs
    # (token, head) rows split over the cores (the kernel uses no more cores than rows)
    return plan_on_cores(lambda cores: costs.elementwise_cycles(spec.kind, -(-rows // cores) * spec.half * 2,
                                                               dequantized=int(spec.x_quant is not None)), platform)


def emit(body, spec: RopeSpec) -> None:
    x, cos, sin = (body.operand(name, getattr(spec, name)) for name in ("x", "cos", "sin"))
    x_quant = body.quant("x_quant", spec.x_quant)
    body.lines.append(f"  dpl_rope({x}, {x_quant}, {cos}, {sin}, {spec.cs_token_stride}, out, {spec.tokens}, "
                      f"{spec.heads}, {spec.half}, {body.fn.plan['cores']});")


def summary(spec: RopeSpec) -> str:
    x = "float32" if spec.x_quant is None else "dequantized int8"
    return f"rope {x} tokens={spec.tokens} heads={spec.heads} half={spec.half}"


FAMILY = register(Family(
    kind=RopeSpec.kind, patterns=(("rope", rope_pattern),), describe=describe, plan=plan, tiling_type=None,
    emit=emit, reference=lambda spec: reference.rope, summary=summary,
    shapes=lambda spec: {"x": list(spec.x.shape), "cos": list(spec.cos.shape), "sin": list(spec.sin.shape)}))
