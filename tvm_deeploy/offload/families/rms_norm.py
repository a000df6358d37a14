"""RMSNorm over the last axis with a constant weight (`R.nn.rms_norm`), fp32, optionally followed by a
per-tensor quantize to int8 (folded into the kernel) -> `dpl_rms_norm`, rows split over the cores."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from tvm.relax.dpl import is_const, is_op, wildcard

from ...emit.c import c_float
from ...plan.engines import plan_on_cores
from .. import reference
from ..describe import CallTree, Unsupported, per_tensor_quant
from ..registry import Family, register
from ..specs import Operand


@dataclass(frozen=True)
class RmsNormSpec:
    """y = rms_norm(x [rows, cols], weight [cols], eps); y float32 or int8 quantized with `y_quant`."""

    x: Operand
    weight: np.ndarray = field(compare=False)
    eps: float
    rows: int
    cols: int
    y_quant: reference.Quant | None = None

    kind = "rms_norm"


def _rms_norm():
    return is_op("relax.nn.rms_norm")(wildcard(), is_const())


def rms_norm_quantize_pattern():
    return is_op("relax.quantize")(_rms_norm(), is_const(), is_const())


def rms_norm_pattern():
    return _rms_norm()


def describe(tree: CallTree, root) -> RmsNormSpec:
    y_quant, norm = None, root
    if root.op.name == "relax.quantize":
        y_quant = per_tensor_quant(root, "the normalized output")
        norm = tree.call(root.args[0], "relax.nn.rms_norm")
    x = tree.operand(norm.args[0])
    if x.dtype != "float32" or x.is_const:
        raise Unsupported(f"rms_norm of a {'constant' if x.is_const else x.dtype}")
    axes = [int(a) % len(x.shape) for a in norm.attrs.axes]
    if axes != [len(x.shape) - 1]:
        raise Unsupported(f"rms_norm over axes {list(norm.attrs.axes)}, not the last alone")
    weight = tree.operand(norm.args[1])
    if weight.dtype != "float32" or weight.shape != x.shape[-1:]:
        raise Unsupported(f"rms_norm weight {weight.dtype}{list(weight.shape)} for x {list(x.shape)}")
    cols = x.shape[-1]
    return RmsNormSpec(x, weight.const, float(np.float32(norm.attrs.epsilon)), math.prod(x.shape[:-1]), cols,
                       y_quant)


def plan(spec: RmsNormSpec, platform) -> dict:
    costs, quantized = platform.cluster_costs, int(spec.y_quant is not None)

    def work(cores: int) -> int:
        if spec.rows >= cores:  # rows split over the cores
            return costs.elementwise_cycles(spec.kind, -(-spec.rows // cores) * spec.cols, quantized=quantized)
        # each row's columns split, every core summing the whole row
        return spec.rows * (costs.elementwise_cycles("rms_norm_sum", spec.cols)
                            + costs.elementwise_cycles("rms_norm_scale", -(-spec.cols // cores), quantized=quantized))

    return plan_on_cores(work, platform)


def emit(body, spec: RmsNormSpec) -> None:
    x = body.operand("x", spec.x)
    weight = body.constant("weight", spec.weight, "float32")
    y_quant = body.quant("y_quant", spec.y_quant)
    body.lines.append(f"  dpl_rms_norm({x}, {weight}, out, {y_quant}, {spec.rows}, {spec.cols}, "
                      f"{c_float(spec.eps)}, {body.fn.plan['cores']});")


def summary(spec: RmsNormSpec) -> str:
    out = "float32" if spec.y_quant is None else "int8"
    return f"rms_norm float32->{out} rows={spec.rows} cols={spec.cols}"


FAMILY = register(Family(
    kind=RmsNormSpec.kind,
    patterns=(("rms_norm_quantize", rms_norm_quantize_pattern), ("rms_norm", rms_norm_pattern)),
    describe=describe, plan=plan, tiling_type=None, emit=emit, reference=lambda spec: reference.rms_norm,
    summary=summary, shapes=lambda spec: {"x": list(spec.x.shape), "weight": list(spec.weight.shape)}))
