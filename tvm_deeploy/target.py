"""The `deeploy` target: TVM's C target tagged so the build pipeline offloads to our codegen.

TVM's target kind "c" accepts only its fixed attribute schema, so the tag carries the platform
in `mcpu` and the key "deeploy"; `Target("deeploy")` keeps the keys but drops the tag name.
"""

from __future__ import annotations

import tvm

KEY = "deeploy"
DEFAULT_PLATFORM = "siracusa"


def register() -> None:
    """Register the target tag `deeploy` (the Siracusa platform)."""
    # override=True: a failed or earlier registration must not leave a stale tag behind.
    tvm.target.tag.register_tag(
        KEY, {"kind": "c", "keys": [KEY, "cpu"], "mcpu": DEFAULT_PLATFORM}, override=True)


def is_deeploy_target(target: tvm.target.Target | None) -> bool:
    return target is not None and KEY in list(target.keys)
