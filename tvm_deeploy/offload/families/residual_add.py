"""A residual add of two same-shape activations, fp32, the second optionally a dequantized int8 tensor (the
int8 linear layer before it) -> `dpl_residual_add`, split over the cores the plan picks."""

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
class ResidualAddSpec:
    """y = a + b over `elements` float32 elements; b float32, or int8 dequantized with `b_quant`."""

    a: Operand
    b: Operand
    b_quant: reference.Quant | None
    elements: int

    kind = "residual_add"


def _dequantized():
    return is_op("relax.dequantize")(wildcard(), is_const(), is_const())


def residual_add_dq_pattern():
    return is_op("relax.add")(wildcard(), _dequantized()) | is_op("relax.add")(_dequantized(), wildcard())


def residual_add_pattern():
    return is_op("relax.add")(wildcard(), wildcard())


def describe(tree: CallTree, root) -> ResidualAddSpec:
    left, right = root.args
    a_expr, b_expr = left, right
    b_call = tree.call(right, "relax.dequantize")
    if b_call is None and tree.call(left, "relax.dequantize") is not None:
        a_expr, b_expr, b_call = right, left, tree.call(left, "relax.dequantize")
    a = tree.operand(a_expr)
    b_quant = None
    if b_call is not None:
        b_quant = per_tensor_quant(b_call, "the added operand")
        b_expr = b_call.args[0]
    b = tree.operand(b_expr)
    if a.is_const or b.is_const:
        raise Unsupported("an add of a constant (a bias, not a residual)")
    if a.dtype != "float32" or (b_quant is None and b.dtype != "float32"):
        raise Unsupported(f"add of {a.dtype} and {b.dtype}")
    if a.shape != b.shape:
        raise Unsupported(f"add of shapes {list(a.shape)} and {list(b.shape)} (broadcasting)")
    return ResidualAddSpec(a, b, b_quant, math.prod(a.shape))


def plan(spec: ResidualAddSpec, platform) -> dict:
    costs = platform.cluster_costs
    return plan_on_cores(lambda cores: costs.elementwise_cycles(spec.kind, -(-spec.elements // cores),
                                                               dequantized=int(spec.b_quant is not None)), platform)


def emit(body, spec: ResidualAddSpec) -> None:
    a, b = body.operand("a", spec.a), body.operand("b", spec.b)
    b_quant = body.quant("b_quant", spec.b_quant)
    body.lines.append(f"  dpl_residual_add({a}, {b}, {b_quant}, out, {spec.elements}, {body.fn.plan['cores']});")


def summary(spec: ResidualAddSpec) -> str:
    b = "float32" if spec.b_quant is None else "dequantized int8"
    return f"residual add float32 + {b} elements={spec.elements}"


FAMILY = register(Family(
    kind=ResidualAddSpec.kind,
    patterns=(("residual_add_dq", residual_add_dq_pattern), ("residual_add", residual_add_pattern)),
    describe=describe, plan=plan, tiling_type=None, emit=emit, reference=lambda spec: reference.residual_add,
    summary=summary, shapes=lambda spec: {"a": list(spec.a.shape), "b": list(spec.b.shape)}))
