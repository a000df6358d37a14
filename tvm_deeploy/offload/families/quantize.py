"""A per-tensor quantize of fp32 to int8 that no kernel before it folded in (e.g. an attention's output
before the next int8 linear layer) -> `dpl_quantize`, elements split over the cores."""

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
class QuantizeSpec:
    """y = quantize(x, y_quant) over `elements` elements, x float32, y int8."""

    x: Operand
    y_quant: reference.Quant
    elements: int

    kind = "quantize"


def quantize_pattern():
    return is_op("relax.quantize")(wildcard(), is_const(), is_const())


def describe(tree: CallTree, root) -> QuantizeSpec:
    y_quant = per_tensor_quant(root, "the quantized tensor")
    x = tree.operand(root.args[0])
    if x.dtype != "float32" or x.is_const:
        raise Unsupported(f"quantize of a {'constant' if x.is_const else x.dtype}")
    return QuantizeSpec(x, y_quant, math.prod(x.shape))


def plan(spec: QuantizeSpec, platform) -> dict:
    costs = platform.cluster_costs
    return plan_on_cores(lambda cores: costs.elementwise_cycles(spec.kind, -(-spec.elements // cores), quantized=1),
                         platform)


def emit(body, spec: QuantizeSpec) -> None:
    x, y_quant = body.operand("x", spec.x), body.quant("y_quant", spec.y_quant)
    body.lines.append(f"  dpl_quantize({x}, {y_quant}, out, {spec.elements}, {body.fn.plan['cores']});")


FAMILY = register(Family(
    kind=QuantizeSpec.kind, patterns=(("quantize", quantize_pattern),), describe=describe, plan=plan,
    tiling_type=None, emit=emit, reference=lambda spec: reference.quantize_s8,
    summary=lambda spec: f"quantize float32->int8 elements={spec.elements}",
    shapes=lambda spec: {"x": list(spec.x.shape)}))
