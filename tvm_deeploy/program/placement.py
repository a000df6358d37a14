"""Where every tensor of a program lives: arena offsets per memory level, weights, the caller's I/O.

Turns a `Program` (and the workspace each TIR call needs) into the memory planner's plain buffers
(lifetimes over the whole program, in-place candidates), plans them, and checks each arena fits its
memory level. Activations go to one level (L2 by default: the tiler owns L1); the network's inputs and
outputs live in the caller's structs unless `io_in_arena`. State (tensors kept across calls, e.g. a KV
cache) gets a persistent region at the start of that level's arena, which the planner never reuses;
each function's activations are planned after it, and functions that never run at once share them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..plan.memory import DEFAULT_ALIGNMENT, DEFAULT_TIME_LIMIT, Buffer, MemoryPlan, plan_level, plan_memory
from ..targets.platforms import Platform
from .lower import ExportError, Program


class ArenaTooSmallError(ExportError):
    """The planned arena of a memory level (with the state it holds) is larger than the level."""

    def __init__(self, level: str, needed: int, available: int, lower_bound: int, platform: str,
                 state_bytes: int = 0, function: str | None = None):
        self.level, self.needed, self.available, self.lower_bound = level, needed, available, lower_bound
        self.state_bytes = state_bytes
        what = "the activations" + (f" of {function}" if function else "")
        if state_bytes:
            what += f" and the state ({state_bytes} bytes kept across calls)"
        super().__init__(f"{what} do not fit {level}: they need {needed} bytes of {level}, {available} "
                         f"bytes are available (platform {platform}; at least {lower_bound} bytes are live at once)")


@dataclass(frozen=True)
class StateLayout:
    """The persistent region at the start of a level's arena: one place per state tensor."""

    level: str
    offsets: dict[str, int]  # state tensor -> byte offset in the arena
    nbytes: int  # the region's bytes (aligned): the activations start here


def plan_state(programs: list[Program], level: str = "L2", alignment: int = DEFAULT_ALIGNMENT) -> StateLayout:
    """The state tensors of all programs one after the other, in order of first appearance."""
    offsets, end = {}, 0
    for program in programs:
        for name in program.state:
            if name not in offsets:
                offsets[name] = end
                end += -(-program.values[name].nbytes // alignment) * alignment
    return StateLayout(level, offsets, end)


@dataclass(frozen=True)
class Place:
    """Where a base value lives: in an arena ("arena", level, offset), in the caller's input or output
    struct ("input" / "output", field), or in a weight array ("const")."""

    kind: str
    level: str | None = None
    offset: int = 0
    field: str | None = None


@dataclass(frozen=True)
class Placement:
    places: dict[str, Place]  # base value name -> place
    workspaces: dict[int, tuple[str, int, int]]  # step index -> (level, offset, bytes)
    plan: MemoryPlan
    buffers: tuple[Buffer, ...]
    io_in_arena: bool
    io_fields: dict[str, str]  # input/output value name -> struct field

    def of(self, program: Program, name: str) -> Place:
        return self.places[program.values[name].base]


def _workspace_name(step: int) -> str:
    return f"workspace of step {step + 1}"  # not a C name, so it never clashes with a value


def io_fields(program: Program) -> dict[str, str]:
    """Struct field names: inputs keep their names, outputs are y (or y0, y1, ...)."""
    fields = {name: name for name in program.inputs}
    if len(program.outputs) == 1:
        fields[program.outputs[0]] = "y"
    else:
        fields.update({name: f"y{i}" for i, name in enumerate(program.outputs)})
    return fields


def buffers_of(program: Program, workspace: dict[str, int], level: str, io_in_arena: bool):
    """(buffers with lifetimes, in-place candidates, base -> place kind) for the planner."""
    end = len(program.steps)  # outputs stay live after the last step
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    kinds = {}
    outputs = {program.values[o].base for o in program.outputs}
    for name, value in program.values.items():
        if value.base != name:
            continue
        if value.kind in ("const", "state"):
            kinds[name] = value.kind
        elif value.kind == "input":
            kinds[name] = "arena" if io_in_arena else "input"
            first[name] = last[name] = 0
        elif name in outputs:
            kinds[name] = "arena" if io_in_arena else "output"
        else:
            kinds[name] = "arena"
    for i, step in enumerate(program.steps):
        for arg in step.inputs:
            base = program.values[arg].base
            last[base] = max(last.get(base, i), i)
        for out in step.outputs:
            first.setdefault(out, i)
            last[out] = max(last.get(out, i), i)
    for base in outputs:
        last[base] = end
    buffers = []
    for name, kind in kinds.items():
        if kind == "arena" and name in first:
            value = program.values[name]
            buffers.append(Buffer(name, value.nbytes, level, first[name], last[name], value.dtype))
    for i, step in enumerate(program.steps):
        size = workspace.get(step.callee, 0) if step.kind == "tvm" else 0
        if size:
            buffers.append(Buffer(_workspace_name(i), size, level, i, i, "workspace"))
    inplace = []
    for step in program.steps:
        if not step.inplace:
            continue
        (out,) = step.outputs
        for pos in step.inplace:
            source = program.values[step.inputs[pos]].base
            # Every use of the source's memory in this call must be at an in-place position.
            same = [j for j, arg in enumerate(step.inputs) if program.values[arg].base == source]
            if set(same) <= set(step.inplace) and kinds.get(source) == "arena" and kinds.get(out) == "arena":
                inplace.append((source, out))
                break
    return buffers, inplace, kinds


def place(program: Program, workspace: dict[str, int], platform: Platform, level: str = "L2",
          io_in_arena: bool = False, alignment: int = DEFAULT_ALIGNMENT,
          time_limit: float = DEFAULT_TIME_LIMIT, state: StateLayout | None = None,
          function: str | None = None) -> Placement:
    """Plan the program's memory with the platform's planner after the `state` region (the program's own
    state tensors placed there); raises `ArenaTooSmallError` (naming `function`, when given) when an arena
    exceeds its level."""
    capacity = platform.level(level).bytes  # KeyError names the platform's levels
    state = state or plan_state([program], level, alignment)
    buffers, inplace, kinds = buffers_of(program, workspace, level, io_in_arena)
    plan = plan_memory(buffers, inplace, alignment=alignment, time_limit=time_limit, planner=platform.planner)
    if level not in plan.levels:  # nothing to place: an empty arena, still reported
        plan = MemoryPlan({level: plan_level(level, [], planner=platform.planner)})
    for level_plan in plan.levels.values():
        if state.nbytes + level_plan.arena_bytes > capacity:
            raise ArenaTooSmallError(level, state.nbytes + level_plan.arena_bytes, capacity,
                                     state.nbytes + level_plan.lower_bound, platform.name, state.nbytes, function)
    fields = io_fields(program)
    base_fields = {program.values[name].base: field for name, field in fields.items()}
    places = {}
    for name, kind in kinds.items():
        if kind == "arena":
            places[name] = Place("arena", level, state.nbytes + plan.levels[level].offsets[name])
        elif kind == "state":
            places[name] = Place("arena", state.level, state.offsets[name])
        elif kind in ("input", "output"):
            places[name] = Place(kind, field=base_fields[name])
        else:
            places[name] = Place("const", field=name)
    workspaces = {}
    for i, step in enumerate(program.steps):
        size = workspace.get(step.callee, 0) if step.kind == "tvm" else 0
        if size:
            workspaces[i] = (level, state.nbytes + plan.levels[level].offsets[_workspace_name(i)], size)
    return Placement(places, workspaces, plan, tuple(buffers), io_in_arena, fields)
