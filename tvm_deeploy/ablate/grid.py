"""The grid file: axes, their defaults, and the points they span.

    [grid]
    model = ["model.onnx", "lm:stories260K"]
    build = ["tvm", "cluster"]
    cores = [1, 8]
    compiler = ["gcc", "clang"]

Every axis is a list; an omitted axis takes its default. ONNX paths are relative to the grid file.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

from ..targets.platforms import PLANNERS, PLATFORMS, TILERS

KIB = 1024
LM_PREFIX = "lm:"
LM_MODELS = ("stories260K", "microLlama")

# axis -> (default, allowed values or None for any of the default's type)
AXES = {
    "model": (None, None),
    "platform": ("siracusa", tuple(PLATFORMS)),
    "build": ("cluster", ("tvm", "cluster", "npu")),
    "cores": (None, None),  # None: the platform's
    "l1_kib": (None, None),
    "l2_kib": (None, None),
    "tiler": (TILERS[0], TILERS),  # the platforms' defaults first
    "planner": (PLANNERS[0], PLANNERS),
    "lanes": (True, (True, False)),  # constant int8 weights packed in lane words (plan/lanes.py)
    "compiler": ("gcc", ("gcc", "clang")),
    "opt": ("-O2", ("-O2", "-O3", "-Os")),
    "run": ("qemu", ("qemu", "host")),
}
SIZE_AXES = ("cores", "l1_kib", "l2_kib")


class GridError(ValueError):
    """The grid file is malformed (the message says where)."""


@dataclass(frozen=True)
class Point:
    model: str
    platform: str
    build: str
    cores: int
    l1_kib: int
    l2_kib: int
    tiler: str
    planner: str
    lanes: bool
    compiler: str
    opt: str
    run: str

    def axes(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        return (f"{Path(self.model).name} {self.build} {self.cores}c L1 {self.l1_kib} L2 {self.l2_kib} "
                f"{self.tiler}/{self.planner}{'' if self.lanes else ' no-lanes'} {self.compiler} {self.opt} {self.run}")

    def skip_reason(self) -> str | None:
        """Why the point cannot run, or None."""
        if self.build == "npu" and not PLATFORMS[self.platform].npu:
            return f"platform {self.platform} has no NPU"
        if self.build == "npu" and self.run == "qemu":
            # the NPU's functional model would run as hart instructions: the counts would mean nothing
            return "qemu cannot count the NPU (run npu builds on host)"
        return None


def _values(name: str, raw) -> list:
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise GridError(f"[grid] {name} is an empty list")
    _, allowed = AXES[name]
    for value in values:
        if allowed is not None and value not in allowed:
            raise GridError(f"[grid] {name}: {value!r} is not one of {', '.join(allowed)}")
        if name in SIZE_AXES and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise GridError(f"[grid] {name}: {value!r} is not a positive integer")
    return values


def _model(value, base: Path) -> str:
    if not isinstance(value, str):
        raise GridError(f"[grid] model: {value!r} is not a string")
    if value.startswith(LM_PREFIX):
        if value[len(LM_PREFIX):] not in LM_MODELS:
            raise GridError(f"[grid] model: {value!r} is not one of "
                            f"{', '.join(LM_PREFIX + m for m in LM_MODELS)}")
        return value
    path = (base / value).resolve()
    if not path.is_file():
        raise GridError(f"[grid] model: {value} not found (looked for {path})")
    return str(path)


def _platform_default(name: str, platform: str) -> int:
    chosen = PLATFORMS[platform]
    return {"cores": chosen.cores, "l1_kib": chosen.level("L1").bytes // KIB,
            "l2_kib": chosen.level("L2").bytes // KIB}[name]


def parse_grid(text: str, base: Path) -> list[Point]:
    """The points of a grid file's text, in a fixed order; `base` resolves relative model paths."""
    try:
        import tomllib
    except ModuleNotFoundError:
        raise GridError("reading a grid file needs Python 3.11 or later (tomllib)") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise GridError(f"not TOML: {err}") from None
    grid = table.get("grid")
    if not isinstance(grid, dict):
        raise GridError("no [grid] table")
    unknown = sorted(set(grid) - set(AXES))
    if unknown:
        raise GridError(f"[grid] unknown axis {', '.join(unknown)} (axes: {', '.join(AXES)})")
    if "model" not in grid:
        raise GridError("[grid] lists no model")
    # a size axis left out takes its platform's value, below
    axes = {name: _values(name, grid[name]) if name in grid else [default] for name, (default, _) in AXES.items()
            if name in grid or default is not None}
    axes["model"] = [_model(value, base) for value in axes["model"]]
    points = []
    for combination in itertools.product(*axes.values()):
        chosen = dict(zip(axes, combination))
        for name in SIZE_AXES:
            chosen.setdefault(name, _platform_default(name, chosen["platform"]))
        points.append(Point(**chosen))
    return points


def load_grid(path) -> list[Point]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise GridError(f"cannot read {path}: {err.strerror}") from None
    return parse_grid(text, path.parent)
