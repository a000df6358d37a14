"""A standalone softmax over the last axis, fp32 -> `dpl_softmax_f32`, untiled (it reads its operand
where it is), rows split over the cores."""

from __future__ import annotations

from tvm.relax.dpl import is_op, wildcard

from ...emit.ops import _emit_softmax
from ...plan.engines import plan_on_cores
from .. import reference
from ..describe import describe_softmax
from ..registry import Family, register
from ..specs import SoftmaxSpec


def softmax_pattern():
    return is_op("relax.nn.softmax")(wildcard())


def plan(spec: SoftmaxSpec, platform) -> dict:
    costs = platform.cluster_costs
    return plan_on_cores(lambda cores: costs.elementwise_cycles(spec.kind, -(-spec.rows // cores) * spec.cols),
                         platform)


FAMILY = register(Family(
    kind=SoftmaxSpec.kind, patterns=(("softmax", softmax_pattern),), describe=describe_softmax, plan=plan,
    tiling_type=None, emit=_emit_softmax, reference=lambda spec: reference.softmax_f32,
    summary=lambda spec: f"softmax float32 rows={spec.rows} cols={spec.cols}",
    shapes=lambda spec: {"x": list(spec.x.shape)}))
