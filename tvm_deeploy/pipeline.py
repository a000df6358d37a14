"""Hook the deeploy offload into `tvm.relax.build` / `tvm.compile`.

Both run `relax.get_pipeline("default")` inside `with target:` and TVM has no per-target hook, so the
"default" entry is wrapped: under a deeploy target it partitions and runs our codegen first, under any
other target it is exactly TVM's own pipeline.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax import pipeline as relax_pipeline

from .emit.codegen import run_codegen
from .offload.partition import partition_for_deeploy
from .plan.offloads import plan_offloads
from .program.half import compute_half_in_float32
from .targets.target import is_deeploy_target

PIPELINE_NAME = "deeploy"


@tvm.transform.module_pass(opt_level=0, name="DeeployOffload")
def offload(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Partition for deeploy, plan, and replace each offloaded function by a call into the generated C,
    planned for the current deeploy target's platform (the default deeploy target's under any other).
    Under a deeploy target TVM's glue is C too, so its float16 arithmetic goes through float32."""
    target = tvm.target.Target.current(allow_none=True)
    c_glue = is_deeploy_target(target)
    mod = run_codegen(plan_offloads(partition_for_deeploy(mod), target if c_glue else "deeploy"))[0]
    return compute_half_in_float32(mod) if c_glue else mod


def _with_offload(tvm_default):
    def default_pipeline(**kwargs):
        tvm_pipeline = tvm_default(**kwargs)

        @tvm.transform.module_pass(opt_level=0, name="DeeployDefaultPipeline")
        def run(mod, ctx):
            if is_deeploy_target(tvm.target.Target.current(allow_none=True)):
                mod = offload(mod)
            return tvm_pipeline(mod)

        return run

    default_pipeline.tvm_default = tvm_default
    return default_pipeline


def deeploy_pipeline(**kwargs):
    """Offload, then TVM's default pipeline: usable with any target (e.g. llvm glue on the host)."""
    tvm_default = getattr(relax_pipeline.PIPELINE_MAP["default"], "tvm_default",
                          relax_pipeline.PIPELINE_MAP["default"])
    return tvm.transform.Sequential([offload, tvm_default(**kwargs)], name="DeeployPipeline")


def install() -> None:
    """Wrap the default pipeline (once) and register the named pipeline "deeploy"."""
    current = relax_pipeline.PIPELINE_MAP["default"]
    if not hasattr(current, "tvm_default"):
        relax_pipeline.PIPELINE_MAP["default"] = _with_offload(current)
    if PIPELINE_NAME not in relax_pipeline.PIPELINE_MAP:
        relax.register_pipeline(PIPELINE_NAME)(deeploy_pipeline)
