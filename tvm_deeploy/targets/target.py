"""The `deeploy` target: TVM's C target tagged so the build pipeline offloads to our codegen.

TVM's target kind "c" accepts only its fixed attribute schema, so the platform (with any overrides)
travels in `mcpu` and the key "deeploy" marks the target; `Target("deeploy")` keeps the keys but
drops the tag name.
"""

from __future__ import annotations

import tvm

from .platforms import Platform, get_platform, parse_mcpu

KEY = "deeploy"
DEFAULT_PLATFORM = "siracusa"


def _config(platform: Platform) -> dict:
    return {"kind": "c", "keys": [KEY, "cpu"], "mcpu": platform.mcpu}


def register() -> None:
    """Register the target tag `deeploy` (the Siracusa platform)."""
    # override=True: a failed or earlier registration must not leave a stale tag behind.
    tvm.target.tag.register_tag(KEY, _config(get_platform(DEFAULT_PLATFORM)), override=True)


def target(platform: str = DEFAULT_PLATFORM, l1_bytes: int | None = None, l2_bytes: int | None = None,
           cores: int | None = None, npu: bool | None = None, tiler: str | None = None,
           planner: str | None = None, lanes: bool | None = None) -> tvm.target.Target:
    """A deeploy target for `platform` with optional overrides, accepted by `tvm.relax.build`.

    tiler: "cpsat" (default) or "greedy"; planner (static memory): "cpsat" (default), "greedy" or "tvm"
    (the buffer sharing TVM's StaticPlanBlockMemory finds); lanes (default True): constant int8 weights packed in
    lane words for the cluster (plan/lanes.py), False keeps them int8."""
    chosen = get_platform(platform).with_overrides(l1_bytes=l1_bytes, l2_bytes=l2_bytes, cores=cores, npu=npu,
                                                   tiler=tiler, planner=planner, lanes=lanes)
    return tvm.target.Target(_config(chosen))


def is_deeploy_target(target: tvm.target.Target | None) -> bool:
    return target is not None and KEY in list(target.keys)


def platform_of(target: tvm.target.Target) -> Platform:
    """The platform a deeploy target describes."""
    return parse_mcpu(str(target.mcpu) or DEFAULT_PLATFORM)
