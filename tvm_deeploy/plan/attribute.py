"""The "deeploy.plan" attribute: what planning decided for one offloaded function, as plain data.

Keys every family writes: engine, tile, tiles, cores, l1_bytes, dma_in_bytes, dma_out_bytes, dma_bytes,
dma_lower_bound, modelled_cycles ({engine: cycles} of every engine that can run the op), solver_status
and tiling (every field of the tiling the C applies, or None for an untiled op). Wall-clock figures
(solver seconds) stay out, so the planned module is the same on every run.
"""

from __future__ import annotations

import dataclasses

PLAN_ATTR = "deeploy.plan"
_WALL_CLOCK_FIELDS = ("solver_seconds",)


def tiling_fields(tiling) -> dict:
    """The tiling's fields as plain data (tuples as lists), without wall-clock figures."""
    return {f.name: list(value) if isinstance(value, tuple) else value
            for f in dataclasses.fields(tiling) if f.name not in _WALL_CLOCK_FIELDS
            for value in (getattr(tiling, f.name),)}


def rebuild_tiling(tiling_type, fields: dict | None):
    """The tiling a plan's "tiling" fields describe (None for an untiled op); wall-clock figures are 0."""
    if tiling_type is None or fields is None:
        return None
    names = {f.name for f in dataclasses.fields(tiling_type)}
    values = {name: tuple(value) if isinstance(value, list) else value for name, value in fields.items()}
    return tiling_type(**values, **{name: 0.0 for name in _WALL_CLOCK_FIELDS if name in names})


def plain(value):
    """An attribute value read back from the IR (tvm-ffi Map, Array, String) as Python dicts, lists, str."""
    if hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (str, bytes)):
        return str(value)
    if hasattr(value, "__len__") and hasattr(value, "__getitem__"):
        return [plain(v) for v in value]
    return value
