"""SwiGLU: silu(a) * b of two same-shape activations, each fp32 or a dequantized int8 tensor (the int8 linear
layers before it), optionally followed by a per-tensor quantize to int8 (the linear layer after it) ->
`dpl_swiglu`, elements split over the cores; an int8 gate's silu comes from a table of its 256 values.
Llama's feed-forward gate, w2(silu(w1 x) * w3 x)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm.relax.dpl import is_const, is_op, wildcard

from ...plan.engines import plan_on_cores
from .. import reference
from ..describe import CallTree, Unsupported, per_tensor_quant
from ..registry import Family, register
from ..specs import Operand


@dataclass(frozen=True)
class SwigluSpec:
    """y = silu(a) * b over `elements` elements; a, b float32 or int8 dequantized, y float32 or int8."""

    a: Operand
    b: Operand
    elements: int
    a_quant: reference.Quant | None = None
    b_quant: reference.Quant | None = None
    y_quant: reference.Quant | None = None

    kind = "swiglu"


def _maybe_dequantized():
    return is_op("relax.dequantize")(wildcard(), is_const(), is_const()) | wildcard()


def _product():
    gate = is_op("relax.nn.silu")(_maybe_dequantized())
    up = _maybe_dequantized()
    return is_op("relax.multiply")(gate, up) | is_op("relax.multiply")(up, gate)


def swiglu_quantize_pattern():
    return is_op("relax.quantize")(_product(), is_const(), is_const())


def swiglu_pattern():
    return _product()


def _operand(tree: CallTree, expr, what: str) -> tuple[Operand, reference.Quant | None]:
    dequantize = tree.call(expr, "relax.dequantize")
    if dequantize is None:
        operand = tree.operand(expr)
        if operand.dtype != "float32":
            raise Unsupported(f"{what} is {operand.dtype}")
        return operand, None
    return tree.operand(dequantize.args[0]), per_tensor_quant(dequantize, what)


def describe(tree: CallTree, root) -> SwigluSpec:
    y_quant, product = None, root
    if root.op.name == "relax.quantize":
        y_quant = per_tensor_quant(root, "the SwiGLU output")
        product = tree.call(root.args[0], "relax.multiply")
    left, right = product.args
    silu = tree.call(left, "relax.nn.silu")
    up = right
    if silu is None:
        silu, up = tree.call(right, "relax.nn.silu"), left
    a, a_quant = _operand(tree, silu.args[0], "the gate")
    b, b_quant = _operand(tree, up, "the up projection")
    if a.is_const or b.is_const:
        raise Unsupported("SwiGLU of a constant")
    if a.shape != b.shape:
        raise Unsupported(f"SwiGLU of shapes {list(a.shape)} and {list(b.shape)} (broadcasting)")
    return SwigluSpec(a, b, math.prod(a.shape), a_quant, b_quant, y_quant)


def plan(spec: SwigluSpec, platform) -> dict:
    kind = "swiglu" if spec.a_quant is None else "swiglu_table"  # an int8 gate's silu is looked up
    costs = platform.cluster_costs
    return plan_on_cores(lambda cores: costs.elementwise_cycles(kind, -(-spec.elements // cores),
                                                               dequantized=int(spec.b_quant is not None),
                                                               quantized=int(spec.y_quant is not None)), platform)


def emit(body, spec: SwigluSpec) -> None:
    a, b = body.operand("a", spec.a), body.operand("b", spec.b)
    a_silu = "NULL" if spec.a_quant is None else body.constant("silu", reference.silu_table(spec.a_quant), "float32")
    quants = [body.quant(name, getattr(spec, name)) for name in ("b_quant", "y_quant")]
    body.lines.append(f"  dpl_swiglu({a}, {a_silu}, {b}, {quants[0]}, out, {quants[1]}, {spec.elements}, "
                      f"{body.fn.plan['cores']});")


def summary(spec: SwigluSpec) -> str:
    dtypes = ["float32" if q is None else "int8" for q in (spec.a_quant, spec.b_quant, spec.y_quant)]
    return f"swiglu silu({dtypes[0]}) * {dtypes[1]} -> {dtypes[2]} elements={spec.elements}"


FAMILY = register(Family(
    kind=SwigluSpec.kind,
    patterns=(("swiglu_quantize", swiglu_quantize_pattern), ("swiglu", swiglu_pattern)),
    describe=describe, plan=plan, tiling_type=None, emit=emit, reference=lambda spec: reference.swiglu,
    summary=summary, shapes=lambda spec: {"a": list(spec.a.shape), "b": list(spec.b.shape)}))
