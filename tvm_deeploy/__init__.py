"""tvm-deeploy: offload attention, GEMM and matmul from TVM Relax to C for RISC-V microcontrollers.

    import tvm, tvm_deeploy
    ex = tvm.relax.build(mod, target="deeploy")
"""

from . import models
from . import pipeline as _pipeline
from .frontend.onnx_import import ModelError, load_onnx
from .offload import patterns as _patterns
from .offload.partition import partition_for_deeploy
from .plan.offloads import plan_offloads
from .plan.report import compile_report
from .program.export import export_c
from .program.generate import export_generator, generate_in_vm
from .program.glue import EXPORT_OPTIONS
from .targets import target as _target
from .targets.platforms import PLATFORMS, Platform
from .targets.target import target

__version__ = "0.1.0"
__all__ = ["EXPORT_OPTIONS", "PLATFORMS", "ModelError", "Platform", "compile_report", "export_c", "export_generator", "generate_in_vm",
           "load_onnx", "models", "partition_for_deeploy", "plan_offloads", "target"]

_target.register()
_patterns.register()
_pipeline.install()
