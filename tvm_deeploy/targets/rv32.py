"""What an exported project needs for its RV32 build (`make rv32`): the bare-metal HAL files and the ISA.

The build targets qemu's virt machine (see c_kernels/hal/rv32.c, rv32_start.S, rv32.ld); running it is
`tvm_deeploy.targets.qemu`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..program.lower import Program
from .resources import kernel_file

HAL_SOURCES = ("hal/rv32.c", "hal/rv32_start.S")
LINKER_SCRIPT = "hal/rv32.ld"
CROSS_COMPILER = "riscv64-unknown-elf-gcc"
# picolibc with semihosting (the program's output and exit code reach qemu's host); -misa-spec=2.2 keeps
# csrr available (zicsr) without changing gcc's multilib choice
TOOLCHAIN_FLAGS = ("-misa-spec=2.2", "--specs=picolibc.specs", "--oslib=semihost", "--crt0=semihost")
_FLOAT_C = re.compile(r"\b(float|double)\b")


@dataclass(frozen=True)
class Isa:
    march: str
    mabi: str
    reason: str


INTEGER = Isa("rv32imc", "ilp32", "the network computes no float")
WITH_FPU = Isa("rv32imafc", "ilp32f", "the network computes in float")


@dataclass(frozen=True)
class Build:
    """The settings `make rv32` is written with."""

    isa: Isa
    harts: int  # default HARTS: the platform's cluster cores
    steps: int  # steps of the network, profiled one by one
    l1_bytes: int
    l2_bytes: int
    npu_weight_bytes: int  # 0 on a platform without an NPU


def isa(programs: list[Program], glue_source: str) -> Isa:
    """rv32imafc when the network computes in float anywhere (a float tensor, or float arithmetic inside
    TVM's glue, e.g. a QDQ graph TVM runs as dequantize -> float matmul -> quantize), else rv32imc."""
    floats = any(value.dtype.startswith("float") for program in programs for value in program.values.values())
    return WITH_FPU if floats or _FLOAT_C.search(glue_source) else INTEGER


def hal_files() -> dict[str, str]:
    """The RV32 HAL and the headers it includes (project path -> text)."""
    names = {"include/dpl_hal.h": "dpl_hal.h", "include/dpl_profile.h": "hal/dpl_profile.h"}
    names.update({name: name for name in HAL_SOURCES + (LINKER_SCRIPT,)})
    return {path: kernel_file(source) for path, source in names.items()}
