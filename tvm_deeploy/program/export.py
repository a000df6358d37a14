"""`export_c`: a Relax module -> a standalone C project for an MCU (no TVM runtime, no malloc, no files).

    tvm_deeploy.export_c(mod, tvm_deeploy.target(), "out", prefix="net")

writes
    out/include/net.h        input/output structs, sizes, arena sizes, `int net_run(in, out)`
    out/src/net.c            the network: arenas, tensor descriptors, the call sequence
    out/src/net_ops.c        the offloaded ops' C and the kernels they call (when anything is offloaded)
    out/src/net_glue.c       TVM's glue: the remaining TIR functions built with TVM's C backend
    out/src/net_weights.c    the constants TVM's glue reads (const, in a named section)
    out/src/dpl_runtime.c    the runtime functions TVM's C calls; dpl_support.h declares what it uses
    out/test/main.c, out/test/net_test_vectors.h   host driver and test vectors
    out/hal/, out/include/dpl_hal.h, dpl_profile.h   the HAL: host.c (threads) when ops are offloaded or
                             TVM's glue forks over the cores, and
                             the bare-metal RV32 one (rv32.c, rv32_start.S, rv32.ld) for qemu
    out/Makefile             `make host`, `make host-asan`, `make rv32` (RISC-V, run by `tvm_deeploy.targets.qemu`)
    out/report.json          ops with engine, memory per level against bounds, weights, solver figures

`functions=("prompt", "decode")` exports several Relax functions of the module into one project: one
glue, ops and weights file, `int net_<function>_run(const struct net_<function>_inputs *in, struct
net_<function>_outputs *out)` each, one arena per level that they share (they never run at once). A
parameter a function writes in place (call_tir_inplace) and returns is state, e.g. a KV cache: it
stays in a persistent region at the start of the L2 arena across calls, outside the structs, with
`net_state_<name>()` accessors and `net_state_reset()`; report.json lists it as memory entry "state".
Test vectors (test/main.c) are made for a single stateless function; `tvm_deeploy.program.generate` writes
the driver of a language model.

Stages, one module each: `program` (Relax -> call sequence), `glue` (TIR -> C), `placement` and
`memory_plan` (arenas), `project` (file texts); this module runs them, makes the test vectors and
writes the files.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import relax
from tvm.relax import pipeline as relax_pipeline
from tvm.relax import transform

from ..offload.specs import summary
from ..plan.memory import DEFAULT_TIME_LIMIT
from ..targets import rv32
from ..targets.resources import kernel_file
from ..targets.target import is_deeploy_target, platform_of
from . import project as proj
from .glue import EXPORT_OPTIONS, build_glue
from .lower import DTYPES, Lowered, Program, c_identifier, lower_program
from .placement import StateLayout, place, plan_state

DEFAULT_WEIGHTS_SECTION = ".dpl_weights"
HOST_HAL = "hal/host.c"


@dataclass(frozen=True)
class Exported:
    out_dir: Path
    prefix: str
    files: tuple[str, ...]  # written, relative to out_dir, sorted
    report: dict


def _check_prefix(prefix: str) -> None:
    if not prefix or c_identifier(prefix) != prefix or prefix.startswith("_"):
        raise ValueError(f"prefix must be a C identifier without a leading underscore, got {prefix!r}")


def _resolve_target(target) -> tvm.target.Target:
    if target is None:
        from ..targets.target import target as deeploy_target

        return deeploy_target()
    if isinstance(target, str):
        target = tvm.target.Target(target)
    if not is_deeploy_target(target):
        raise ValueError(f"export_c needs a deeploy target (tvm_deeploy.target(...)), got {target}")
    return target


def offloaded_files(prefix: str, functions: list) -> tuple[dict[str, str], dict[str, int]]:
    """The files the offloaded ops need (path in the project -> text) and the bytes of weights they hold
    per section macro. The one place that decides which C the offloaded kernels bring into a project:
    their source, and the HAL they run on (hal/<platform>.c, built by the Makefile target for that
    platform)."""
    if not functions:
        return {}, {"DPL_WEIGHTS": 0, "DPL_NPU_WEIGHTS": 0}
    text, weight_bytes = proj.ops_source(prefix, functions)
    files = {f"src/{prefix}_ops.c": text, "include/dpl_hal.h": kernel_file("dpl_hal.h"),
             HOST_HAL: kernel_file(HOST_HAL)}
    return files, weight_bytes


def project_sources(files: dict[str, str]) -> tuple[list[str], list[str]]:
    """(the network's C sources, every header) among the project files; test/ is the driver's."""
    sources = sorted(name for name in files if name.startswith("src/") and name.endswith(".c"))
    headers = sorted(name for name in files if name.endswith(".h"))
    return sources, headers


def tvm_static_plan_bytes(lowered_module: tvm.IRModule, functions=("main",)) -> dict[str, dict]:
    """TVM's own StaticPlanBlockMemory on the same lowered module, per function: the bytes of the storages
    it allocates, and of the tensors it leaves unplanned (the outputs)."""
    mod = tvm.transform.Sequential([transform.CallTIRRewrite(), transform.StaticPlanBlockMemory()])(lowered_module)
    figures = {}
    for name in functions:
        storage = unplanned = 0

        def visit(expr):
            nonlocal storage, unplanned
            if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
                if expr.op.name == "relax.memory.alloc_storage":
                    storage += int(np.prod([int(v) for v in expr.args[0].values]))
                elif expr.op.name == "relax.builtin.alloc_tensor":
                    shape = [int(v) for v in expr.args[0].values]
                    dtype = str(expr.args[1].value)
                    unplanned += int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype][1] // 8

        relax.analysis.post_order_visit(mod[name].body, visit)
        figures[name] = {"storage_bytes": storage, "unplanned_output_bytes": unplanned}
    return figures


# ---- test vectors --------------------------------------------------------------------------------

def make_inputs(program: Program, seed: int = 0, index_sizes: dict[str, int] | None = None) -> list[np.ndarray]:
    """Seeded test inputs: standard normal floats, integers over the type's range (int32: +-1000); an
    input used as indices (`index_sizes`: input -> length of the indexed axis) stays inside the axis."""
    rng = np.random.default_rng(seed)
    index_sizes = index_sizes or {}
    arrays = []
    for name in program.inputs:
        value = program.values[name]
        if value.dtype.startswith("float"):
            arrays.append(rng.standard_normal(value.shape).astype(value.dtype))
        elif value.dtype == "bool":
            arrays.append(rng.integers(0, 2, value.shape).astype(bool))
        elif name in index_sizes:
            arrays.append(rng.integers(0, index_sizes[name], value.shape).astype(value.dtype))
        else:
            info = np.iinfo(value.dtype)
            lo, hi = max(int(info.min), -1000), min(int(info.max), 1000)
            if DTYPES[value.dtype][1] == 8:
                lo, hi = int(info.min), int(info.max)
            arrays.append(rng.integers(lo, hi, value.shape, endpoint=True).astype(value.dtype))
    return arrays


# Ops that pass values through unchanged: an input behind them still holds indices.
_VALUE_PRESERVING = ("relax.astype", "relax.reshape", "relax.expand_dims", "relax.squeeze", "relax.permute_dims",
                     "relax.flatten")


def index_sizes(function: relax.Function) -> dict[str, int]:
    """Parameter name -> the smallest length of an axis that `take` (ONNX Gather) indexes with it."""
    origin = {p: p.name for p in function.params}
    sizes: dict[str, int] = {}
    for block in function.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op)):
                continue
            if value.op.name in _VALUE_PRESERVING and value.args[0] in origin:
                origin[binding.var] = origin[value.args[0]]
            elif value.op.name == "relax.where" and value.args[2] in origin:  # ONNX Gather's negative-index wrap
                origin[binding.var] = origin[value.args[2]]
            elif value.op.name == "relax.take" and value.args[1] in origin:
                dims = value.args[0].ty.shape.values
                if not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
                    continue  # lower_program refuses symbolic shapes
                table = [int(d) for d in dims]
                axis = value.attrs.axis
                length = int(np.prod(table)) if axis is None else table[int(axis)]
                name = origin[value.args[1]]
                sizes[name] = min(sizes.get(name, length), length)
    return sizes


def load_in_vm(mod: tvm.IRModule, target, relax_pipeline_=None) -> relax.VirtualMachine:
    """relax.build, export_library (which compiles a deeploy module's C) and load into TVM's VM on this host."""
    kwargs = {} if relax_pipeline_ is None else {"relax_pipeline": relax_pipeline_}
    ex = tvm.relax.build(mod, target=target, **kwargs)
    with tempfile.TemporaryDirectory(prefix="tvm-deeploy-export-") as tmp:
        path = str(Path(tmp) / "lib.so")
        ex.export_library(path, options=list(EXPORT_OPTIONS))
        return relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())  # loaded: the file may go


def run_in_vm(mod: tvm.IRModule, target, inputs: list[np.ndarray], relax_pipeline_=None) -> list[np.ndarray]:
    """`load_in_vm` and run `main` on `inputs`; outputs as a list."""
    vm = load_in_vm(mod, target, relax_pipeline_)
    out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs])
    return [np.array(o.numpy()) for o in _flatten(out)]


def _flatten(out):
    if isinstance(out, tvm.runtime.Tensor):
        return [out]
    items = []
    for item in out:
        items += _flatten(item)
    return items


def reference_outputs(mod, target, inputs, offload: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(the VM running relax.build(mod, target) -- TVM's own pipeline when not offloading --, llvm)."""
    pipeline = None
    if not offload:
        default = relax_pipeline.PIPELINE_MAP["default"]
        pipeline = getattr(default, "tvm_default", default)()
    return run_in_vm(mod, target, inputs, pipeline), run_in_vm(mod, "llvm", inputs)


# ---- the report ----------------------------------------------------------------------------------

def _tensor(value) -> str:
    return f"{value.name}: {value.dtype}[{', '.join(str(d) for d in value.shape)}]"


def _counts(steps) -> dict:
    """Steps by kind; "deeploy" counts call sites, "deeploy_functions" the distinct offloaded functions
    they call (identical ops, e.g. a Llama's attention in every layer, share one)."""
    return {"steps": len(steps), "tvm": sum(s.kind == "tvm" for s in steps),
            "deeploy": sum(s.kind == "deeploy" for s in steps),
            "deeploy_functions": len({s.callee for s in steps if s.kind == "deeploy"}),
            "copies": sum(s.kind == "copy" for s in steps)}


def _op_entries(entry: proj.Entry, ops: dict, glue) -> list[dict]:
    program, steps = entry.program, []
    for i, step in enumerate(program.steps):
        item = {"step": entry.first_step + i + 1, "function": entry.function, "kind": step.kind,
                "callee": step.callee, "inputs": [_tensor(program.values[n]) for n in step.inputs],
                "outputs": [_tensor(program.values[n]) for n in step.outputs]}
        if step.kind == "deeploy":
            fn = ops[step.callee]
            item.update(engine=fn.engine, op=summary(fn.spec), plan=fn.plan)  # its "deeploy.plan" attribute
        elif step.kind == "tvm":
            item.update(engine="tvm", op=step.callee, workspace_bytes=glue.workspace.get(step.callee, 0),
                        cores=glue.cores if step.callee in glue.forked else 1)
        else:
            item.update(engine="copy", op="copy")
        steps.append(item)
    return steps


def _largest_workspace(entry: proj.Entry, level: str) -> int:
    return max((size for lv, _, size in entry.placement.workspaces.values() if lv == level), default=0)


def _function_report(entry: proj.Entry, tvm_plan: dict) -> dict:
    program = entry.program
    memory = {level: {"arena_bytes": plan.arena_bytes, "lower_bound_bytes": plan.lower_bound,
                      "tvm_static_plan_block_memory_bytes": tvm_plan["storage_bytes"],
                      "largest_workspace_bytes": _largest_workspace(entry, level), "method": plan.method,
                      "status": plan.status, "greedy_bytes": plan.greedy_bytes, "blocks": plan.buffers,
                      "in_place": len(plan.inplace)}
              for level, plan in entry.placement.plan.levels.items()}
    return {"run": f"{entry.stem}_run", "steps": [entry.first_step + 1, entry.first_step + len(program.steps)],
            "counts": _counts(program.steps), "inputs": [_tensor(program.values[n]) for n in program.inputs],
            "outputs": [_tensor(program.values[n]) for n in program.outputs],
            "state": [_tensor(program.values[n]) for n in program.state],
            "io_bytes": {kind: sum(program.values[n].nbytes for n in names)
                         for kind, names in (("inputs", program.inputs), ("outputs", program.outputs))},
            "memory": memory}


def _level_report(inp: proj.ProjectInput, level: str, tvm_plans: dict, platform) -> dict:
    """The level's shared arena: the largest function's figures (they never run at once)."""
    entries = [e for e in inp.entries if level in e.placement.plan.levels]
    plans = {e.function: e.placement.plan.levels[level] for e in entries}
    arena = max(plan.arena_bytes for plan in plans.values())
    bound = max(plan.lower_bound for plan in plans.values())
    storage = max(tvm_plans[e.function]["storage_bytes"] for e in entries)
    report = {
        "arena_bytes": arena, "lower_bound_bytes": bound,
        "arena_over_lower_bound": round(arena / bound, 4) if bound else 1.0,
        "tvm_static_plan_block_memory_bytes": storage,
        # TVM allocates TIR workspace outside that plan; its peak is the largest single call's.
        "tvm_static_plan_block_memory_plus_workspace_bytes": max(
            tvm_plans[e.function]["storage_bytes"] + _largest_workspace(e, level) for e in entries),
        "tvm_unplanned_output_bytes": max(tvm_plans[e.function]["unplanned_output_bytes"] for e in entries),
        "capacity_bytes": platform.level(level).bytes,
        "largest_workspace_bytes": max(_largest_workspace(e, level) for e in entries),
    }
    if inp.state.offsets and inp.state.level == level:
        report.update(state_bytes=inp.state.nbytes, total_bytes=inp.arena_bytes(level))
    return report


def _state_report(inp: proj.ProjectInput) -> dict:
    state = inp.state
    return {"arena_bytes": state.nbytes, "level": state.level, "offset": 0, "owner": "state",
            "what": "tensors written in place and kept across calls (the KV cache), before the activations",
            "tensors": {v.name: {"shape": list(v.shape), "dtype": v.dtype, "bytes": v.nbytes,
                                 "offset": state.offsets[v.name]} for v in inp.state_values()}}


def build_report(target, platform, lowered: Lowered, inp: proj.ProjectInput, tvm_plans: dict, weight_bytes,
                 offload, description) -> dict:
    ops = {fn.symbol: fn for fn in lowered.offloaded}
    steps = [s for e in inp.entries for s in e.program.steps]
    memory, solver = {}, {}
    for level in inp.levels():
        memory[level] = _level_report(inp, level, tvm_plans, platform)
        largest = max((e for e in inp.entries if level in e.placement.plan.levels),
                      key=lambda e: e.placement.plan.levels[level].arena_bytes)
        plan = largest.placement.plan.levels[level]
        solver[level] = {"function": largest.function, "method": plan.method, "status": plan.status,
                         "greedy_bytes": plan.greedy_bytes, "blocks": plan.buffers, "in_place": len(plan.inplace)}
    # L1 belongs to the tiler: each tiled op lays out its tiles from the start of one static arena.
    l1_bytes = max((fn.l1_bytes for fn in lowered.offloaded), default=0)
    memory["L1"] = {"arena_bytes": l1_bytes, "capacity_bytes": platform.l1_bytes, "owner": "tiler",
                    "largest_op": max(lowered.offloaded, key=lambda fn: fn.l1_bytes).symbol if l1_bytes else None}
    if inp.state.offsets:
        memory["state"] = _state_report(inp)
    functions = {e.function: _function_report(e, tvm_plans[e.function]) for e in inp.entries}
    from .. import __version__

    return {
        "generator": f"tvm-deeploy {__version__}",
        "prefix": inp.prefix,
        "description": description,
        "target": {"mcpu": str(target.mcpu), "platform": platform.name,
                   "levels": {lv.name: lv.bytes for lv in platform.levels}, "cores": platform.cores,
                   "npu": platform.npu},
        "offload": offload,
        "io_in_arena": inp.entries[0].placement.io_in_arena,
        "functions": functions,
        "counts": _counts(steps),
        "ops": [item for e in inp.entries for item in _op_entries(e, ops, inp.glue)],
        "memory": memory,
        "io_bytes": {kind: sum(f["io_bytes"][kind] for f in functions.values()) for kind in ("inputs", "outputs")},
        "weights": {"bytes": weight_bytes, "section": None, "tvm_glue_bytes": sum(
            value.nbytes for value, _ in inp.constants().values())},
        "solver": solver,
    }


# ---- export --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Project:
    """A project's file texts (but report.json) and its report, before they are written."""

    files: dict[str, str]
    report: dict
    input: proj.ProjectInput


def _description(inp: proj.ProjectInput, platform, offload: bool) -> str:
    def steps(p: Program) -> str:
        return f"{len(p.steps)} steps, {sum(s.kind == 'deeploy' for s in p.steps)} offloaded"

    if len(inp.entries) == 1:
        text = steps(inp.entries[0].program)
    else:
        text = "functions " + "; ".join(f"{e.function} ({steps(e.program)})" for e in inp.entries)
    return text + f", platform {platform.name}" + ("" if offload else ", TVM alone (no offload)")


def _entries(lowered: Lowered, glue, platform, prefix: str, state: StateLayout, level: str, io_in_arena: bool,
             time_limit: float) -> tuple[proj.Entry, ...]:
    """Each function's memory placed after the state; steps numbered across the functions."""
    entries, first = [], 0
    several = len(lowered.programs) > 1
    for name, program in lowered.programs.items():
        placement = place(program, glue.workspace, platform, level, io_in_arena, time_limit=time_limit,
                          state=state, function=name if several else None)
        entries.append(proj.Entry(name, proj.entry_stem(prefix, name), program, placement, first))
        first += len(program.steps)
    return tuple(entries)


def build_project(mod: tvm.IRModule, target, prefix: str = "net", *, functions=("main",), offload: bool = True,
                  io_in_arena: bool = False, inputs: list[np.ndarray] | None = None, test_vectors: bool | None = None,
                  expected_outputs: list[np.ndarray] | None = None, seed: int = 0, checks: bool = False,
                  activation_level: str = "L2", solver_time_limit: float = DEFAULT_TIME_LIMIT,
                  weights_section: str = DEFAULT_WEIGHTS_SECTION, description: str | None = None) -> Project:
    """`export_c` up to the file texts (see there); nothing is written."""
    _check_prefix(prefix)
    target = _resolve_target(target)
    platform = platform_of(target)
    lowered = lower_program(mod, target, offload, tuple(functions))
    programs = list(lowered.programs.values())
    stateful = any(p.state for p in programs)
    if test_vectors is None:
        test_vectors = len(programs) == 1 and not stateful
    elif test_vectors and (len(programs) > 1 or stateful):
        raise ValueError(f"test vectors are made for one function without state; {', '.join(lowered.programs)} "
                         f"{'has state' if len(programs) == 1 else 'are several functions'}: pass "
                         "test_vectors=False (tvm_deeploy.program.generate writes a language model's driver)")
    if expected_outputs is not None and not test_vectors:
        raise ValueError("golden outputs are checked by the test driver, which this export does not write "
                         f"({', '.join(lowered.programs)}: several functions, state, or test_vectors=False)")
    # TVM alone stays TVM's own 1-core program (the baseline); with the offload its glue runs on every core
    glue = build_glue(lowered.prim_funcs, target, prefix, checks, platform.cores if offload else 1)
    state = plan_state(programs, activation_level)
    entries = _entries(lowered, glue, platform, prefix, state, activation_level, io_in_arena, solver_time_limit)
    inp = proj.ProjectInput(prefix, entries, glue, lowered.offloaded, state, weights_section, "")
    description = description or _description(inp, platform, offload)
    inp = dataclasses.replace(inp, description=description)

    files, section_bytes = offloaded_files(prefix, lowered.offloaded)
    if glue.forked:  # split glue forks over the cores: the host build needs the HAL without any offloaded op too
        files.update({"include/dpl_hal.h": kernel_file("dpl_hal.h"), HOST_HAL: kernel_file(HOST_HAL)})
    npu_weight_bytes = section_bytes["DPL_NPU_WEIGHTS"]
    constants = inp.constants()
    weight_bytes = section_bytes["DPL_WEIGHTS"] + npu_weight_bytes + sum(v.nbytes for v, _ in constants.values())
    if lowered.prim_funcs:
        files[f"src/{prefix}_glue.c"] = glue.source
    if constants:
        files[f"src/{prefix}_weights.c"] = proj.weights_source(inp)
    files[f"src/{prefix}.c"] = proj.network_source(inp)
    files[f"include/{prefix}.h"] = proj.header_source(inp, weight_bytes)
    files["src/dpl_support.h"] = proj.support_header(weights_section)
    files["src/dpl_half.h"] = kernel_file("dpl_half.h")
    files[proj.RUNTIME_SOURCE] = proj.runtime_source()
    if test_vectors:
        (program,), (entry,) = programs, entries
        function = mod[next(iter(lowered.programs))]
        sizes = dict(zip(program.inputs, (index_sizes(function).get(p.name) for p in function.params)))
        sizes = {name: size for name, size in sizes.items() if size is not None}
        arrays = [np.asarray(x) for x in inputs] if inputs is not None else make_inputs(program, seed, sizes)
        _check_inputs(program, arrays)
        golden = expected_outputs is not None
        if golden:
            expected, llvm = golden_outputs(program, expected_outputs), run_in_vm(mod, "llvm", arrays)
        else:
            expected, llvm = reference_outputs(mod, target, arrays, offload)
        files[f"test/{prefix}_test_vectors.h"] = proj.test_vectors_source(
            prefix, program, entry.placement.io_fields, arrays, expected, llvm, golden)
        files["test/main.c"] = proj.main_source(prefix, program, entry.placement.io_fields, golden)
    files.update(rv32.hal_files())
    sources, headers = project_sources(files)
    build = rv32.Build(rv32.isa(programs, glue.source), platform.cores, sum(len(p.steps) for p in programs),
                       platform.l1_bytes, platform.level("L2").bytes,
                       sum(level.bytes for level in platform.levels if level.name == "weights"))
    files["Makefile"] = proj.makefile(prefix, sources, headers, sorted(n for n in files if n == HOST_HAL), build)

    tvm_plans = tvm_static_plan_bytes(lowered.module, tuple(lowered.programs))
    report = build_report(target, platform, lowered, inp, tvm_plans, weight_bytes, offload, description)
    report["weights"]["section"] = weights_section
    report["rv32"] = {"march": build.isa.march, "reason": build.isa.reason}  # what `make rv32` compiles for
    # The NPU's packed weights stay resident in its weight memory (section .dpl_npu_weights).
    report["weights"]["npu_bytes"] = npu_weight_bytes
    report["memory"]["weights"] = {"arena_bytes": npu_weight_bytes, "owner": "npu",
                                   "capacity_bytes": platform.level("weights").bytes if platform.npu else 0}
    return Project(files, report, inp)


def write_project(project: Project, out_dir) -> Exported:
    """Write the files and report.json (which lists every file) into `out_dir`."""
    out = Path(out_dir)
    files = dict(project.files)
    report = dict(project.report, files=sorted(files) + ["report.json"])
    files["report.json"] = json.dumps(report, indent=2) + "\n"
    for name in sorted(files):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[name])
    return Exported(out, project.input.prefix, tuple(sorted(files)), report)


def export_c(mod: tvm.IRModule, target=None, out_dir="deeploy_out", prefix: str = "net", *, functions=("main",),
             offload: bool = True, io_in_arena: bool = False, inputs: list[np.ndarray] | None = None,
             test_vectors: bool | None = None, expected_outputs: list[np.ndarray] | None = None, seed: int = 0,
             checks: bool = False, activation_level: str = "L2", solver_time_limit: float = DEFAULT_TIME_LIMIT,
             weights_section: str = DEFAULT_WEIGHTS_SECTION, description: str | None = None) -> Exported:
    """Write the standalone C project of `mod` for a deeploy `target` into `out_dir` (see the module doc).

    functions names the Relax functions to export (each gets `<prefix>_<function>_run`; `main` keeps
    `<prefix>_run`). offload=False is the "TVM alone" baseline (every op through TVM's glue). io_in_arena
    places the inputs and outputs in the arena too. test_vectors (default: when there is one function
    without state) builds the module with relax.build for `target` and for llvm and runs both in TVM's VM
    on `inputs` (seeded random by default). expected_outputs (golden outputs, one array per output, compared
    flattened) replaces the VM's outputs as the driver's reference: integers exactly, floats within 1e-4
    absolute (Deeploy's rule). checks keeps TVM's argument checks in the glue. Raises
    ExportError subclasses: UnsupportedModelError (dynamic shapes, control flow, state written but not
    returned, ...) and ArenaTooSmallError (level, bytes needed, bytes available)."""
    project = build_project(mod, target, prefix, functions=functions, offload=offload, io_in_arena=io_in_arena,
                            inputs=inputs, test_vectors=test_vectors, expected_outputs=expected_outputs, seed=seed,
                            checks=checks,
                            activation_level=activation_level, solver_time_limit=solver_time_limit,
                            weights_section=weights_section, description=description)
    return write_project(project, out_dir)


def golden_outputs(program: Program, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Given outputs as the program's output arrays: same element count (compared flattened, as Deeploy
    does), converted to the output's dtype only when every value survives (integers stored as floats)."""
    arrays = [np.asarray(a) for a in arrays]
    if len(arrays) != len(program.outputs):
        raise ValueError(f"expected {len(program.outputs)} golden outputs, got {len(arrays)}")
    fitted = []
    for name, array in zip(program.outputs, arrays):
        value = program.values[name]
        if array.size != value.elements:
            raise ValueError(f"golden output for {_tensor(value)}: {array.size} elements, expected {value.elements}")
        converted = array.reshape(value.shape).astype(value.dtype)
        if value.dtype.startswith(("int", "uint")) and not np.array_equal(converted.astype(np.float64),
                                                                          array.reshape(value.shape)
                                                                          .astype(np.float64)):
            raise ValueError(f"golden output for {_tensor(value)}: values that {value.dtype} does not hold "
                             f"(range {array.min()} ... {array.max()})")
        fitted.append(converted)
    return fitted


def _check_inputs(program: Program, arrays: list[np.ndarray]) -> None:
    if len(arrays) != len(program.inputs):
        raise ValueError(f"expected {len(program.inputs)} test inputs, got {len(arrays)}")
    for name, array in zip(program.inputs, arrays):
        value = program.values[name]
        if tuple(array.shape) != value.shape or str(array.dtype) != value.dtype:
            raise ValueError(f"test input {_tensor(value)}: got {array.dtype}{list(array.shape)}")
