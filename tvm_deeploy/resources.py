"""Where the C kernels and templates are: inside the package in a wheel, beside it in a checkout."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


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


@lru_cache(maxsize=1)
def kernel_sources() -> str:
    """The kernel library as one text (header first, then each .c in name order), local includes
    removed, so a generated module compiles on its own."""
    folder = resource_dir("c_kernels")
    parts = [folder / "dpl_kernels.h"] + sorted(folder.glob("*.c"))
    return "".join(f"/* ---- c_kernels/{p.name} ---- */\n" + _LOCAL_INCLUDE.sub("", p.read_text()) + "\n"
                   for p in parts)
