"""Where the C kernels and templates are: inside the package in a wheel, beside it in a checkout."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def resource_dir(name: str) -> Path:
    """`c_kernels` or `codegen`: the wheel ships them in the package, a checkout keeps them at the top."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"tvm-deeploy resource folder '{name}' is missing: reinstall the package")


@lru_cache(maxsize=None)
def template(name: str) -> str:
    return (resource_dir("codegen") / name).read_text()


_LOCAL_INCLUDE = re.compile(r'^#include "[^"]+"\n', re.MULTILINE)


def _strip_local_includes(path: Path) -> str:
    return f"/* ---- c_kernels/{path.relative_to(resource_dir('c_kernels'))} ---- */\n" \
        + _LOCAL_INCLUDE.sub("", path.read_text()) + "\n"


@lru_cache(maxsize=1)
def kernel_sources() -> str:
    """The portable kernel library as one text (the generated dpl_platform.h and the headers first, then
    each .c in name order), local includes removed, so a generated module compiles on its own."""
    from .platform_header import HEADER_NAME, render  # generated from the Python constants, not read

    folder = resource_dir("c_kernels")
    # each before its includers
    headers = ("dpl_hal.h", "dpl_npu.h", "dpl_kernel_args.h", "dpl_math.h", "dpl_kernels.h")
    parts = [folder / name for name in headers] + sorted(folder.glob("*.c"))
    return (f"/* ---- {HEADER_NAME} (generated) ---- */\n{render()}\n"
            + "".join(_strip_local_includes(p) for p in parts))


def kernel_file(relative: str) -> str:
    """One file of c_kernels/ as it is (for projects that compile it on its own)."""
    return (resource_dir("c_kernels") / relative).read_text()


@lru_cache(maxsize=None)
def hal_source(platform: str) -> str:
    """One HAL implementation (c_kernels/hal/<platform>.c), local includes removed."""
    return _strip_local_includes(resource_dir("c_kernels") / "hal" / f"{platform}.c")
