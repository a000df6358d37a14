"""The standalone C project's text: header, network, weights, glue, offloaded ops, runtime, Makefile,
and the host test driver. Every function here is pure (plain data in, file texts out) and
deterministic: same input, same bytes.

A project holds one or more entries, each an exported Relax function with its own `<stem>_run` and
input/output structs (the stem is the prefix for `main`, `<prefix>_<function>` otherwise), sharing
the glue, the offloaded ops, the weights, the arenas and the state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from string import Template

import numpy as np

from ..emit.ops import Function, c_float, emit_module, summary
from ..targets.resources import template
from ..targets.rv32 import CROSS_COMPILER, HAL_SOURCES, TOOLCHAIN_FLAGS, Build
from .glue import SUPPORT_HEADER, Glue
from .lower import DTYPES, Program, Step, Value
from .placement import Placement, StateLayout

RUNTIME_SOURCE = "src/dpl_runtime.c"
FP32_TOLERANCE = 1e-6
_ARRAY = re.compile(r"^static const (float|double|u?int(?:8|16|32|64)_t) (\w+)\[(\d+)\] (DPL_\w*WEIGHTS) = \{$",
                    re.MULTILINE)
_C_SIZES = {"float": 4, "double": 8, "int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4,
            "uint32_t": 4, "int64_t": 8, "uint64_t": 8}


@dataclass(frozen=True)
class Entry:
    """One exported function: its program, where its tensors live, the stem of its C names (`<stem>_run`,
    `struct <stem>_inputs`, `<STEM>_INPUT_...`) and how many steps come before its own (steps are numbered
    across the project's functions, as in report.json)."""

    function: str
    stem: str
    program: Program
    placement: Placement
    first_step: int = 0


def entry_stem(prefix: str, function: str) -> str:
    return prefix if function == "main" else f"{prefix}_{function}"


@dataclass(frozen=True)
class ProjectInput:
    """Everything the project text is made from."""

    prefix: str
    entries: tuple[Entry, ...]
    glue: Glue
    offloaded: list[Function]
    state: StateLayout
    weights_section: str
    description: str

    def constants(self) -> dict[str, tuple[Value, np.ndarray]]:
        """Every entry's constants (shared names), in order of first use."""
        found = {}
        for entry in self.entries:
            for name, array in entry.program.constants.items():
                found.setdefault(name, (entry.program.values[name], array))
        return found

    def state_values(self) -> list[Value]:
        values = {n: e.program.values[n] for e in self.entries for n in e.program.state}
        return [values[name] for name in self.state.offsets]

    def arena_bytes(self, level: str) -> int:
        """The level's arena: its state region, then room for the largest function's activations."""
        state = self.state.nbytes if level == self.state.level else 0
        return state + max(e.placement.plan.levels[level].arena_bytes for e in self.entries
                           if level in e.placement.plan.levels)

    def levels(self) -> list[str]:
        return list(dict.fromkeys(level for e in self.entries for level in e.placement.plan.levels))


def ctype(dtype: str) -> str:
    return DTYPES[dtype][0]


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _type_text(value) -> str:
    return f"{value.dtype}{_shape(value.shape)}"


def c_array_items(values: np.ndarray, dtype: str) -> str:
    flat = np.ascontiguousarray(values).reshape(-1)
    if dtype in ("float32", "float64"):
        items = [c_float(v) if dtype == "float32" else _c_double(v) for v in flat]
        per_line = 6
    else:
        suffix = {"int64": "LL", "uint64": "ULL", "uint32": "U"}.get(dtype, "")
        items = [_c_int(int(v), dtype) + suffix for v in flat]
        per_line = 16
    if not items:
        return "0"
    return "\n".join("  " + ", ".join(items[i:i + per_line]) + "," for i in range(0, len(items), per_line))


def _c_int(value: int, dtype: str) -> str:
    # The most negative value has no literal of its own type.
    if dtype == "int32" and value == -(2**31):
        return "(-2147483647 - 1)"
    if dtype == "int64" and value == -(2**63):
        return "(-9223372036854775807LL - 1)"
    return str(value)


def _c_double(value) -> str:
    value = float(value)
    if np.isnan(value):
        return "NAN"
    if np.isinf(value):
        return "INFINITY" if value > 0 else "-INFINITY"
    return value.hex()


# ---- offloaded ops -------------------------------------------------------------------------------

def ops_source(prefix: str, functions: list[Function]) -> tuple[str, dict[str, int]]:
    """The offloaded ops' C (emit_module, MCU part only; its weight arrays go to the weight section
    through DPL_WEIGHTS, the NPU's packed weights to its weight memory through DPL_NPU_WEIGHTS);
    (text, weight bytes per section macro). The ops keep no mutable state of their own: every scratch
    buffer lives in the L1 arena."""
    text = emit_module(functions, ffi_wrappers=False)
    weight_bytes = {"DPL_WEIGHTS": 0, "DPL_NPU_WEIGHTS": 0}
    for m in _ARRAY.finditer(text):
        weight_bytes[m.group(4)] += _C_SIZES[m.group(1)] * int(m.group(3))
    preamble = (f"/* {prefix}_ops.c (generated by tvm-deeploy; do not edit): the offloaded ops and the C kernels "
                "they call. */\n"
                f'#include "{SUPPORT_HEADER}"\n')
    return preamble + text, weight_bytes


def _entry_prototype(fn: Function) -> str:
    params = [f"const {ctype(t.dtype)} *in{i}" for i, t in enumerate(fn.inputs)]
    params.append(f"{ctype(fn.output.dtype)} *out")
    return f"void {fn.symbol}({', '.join(params)});"


# ---- weights of TVM's glue -----------------------------------------------------------------------

def weight_symbol(prefix: str, name: str) -> str:
    return f"{prefix}_w_{name}"


def weights_source(inp: ProjectInput) -> str:
    parts = [f"/* {inp.prefix}_weights.c (generated by tvm-deeploy; do not edit): the constants TVM's glue reads, "
             f"in section {inp.weights_section}. */",
             "#include <math.h>", "#include <stdint.h>", "", f'#include "{SUPPORT_HEADER}"', ""]
    for name, (value, array) in inp.constants().items():
        parts.append(f"/* {name}: {_type_text(value)} */")
        parts.append(f"const {ctype(value.dtype)} {weight_symbol(inp.prefix, name)}[{value.elements}] DPL_WEIGHTS "
                     f"DPL_ALIGNED(16) = {{\n{c_array_items(array, value.dtype)}\n}};")
    return "\n".join(parts) + "\n"


# ---- the network ---------------------------------------------------------------------------------

def arena_symbol(prefix: str, level: str) -> str:
    return f"{prefix}_arena_{level}"


def _descriptor(prefix: str, name: str) -> str:
    return f"{prefix}_t_{name}"


def _pointer(prefix: str, entry: Entry, name: str) -> str:
    """A C expression for the first byte of value `name` (const-qualified for inputs and weights)."""
    place = entry.placement.of(entry.program, name)
    if place.kind == "arena":
        return f"({arena_symbol(prefix, place.level)} + {place.offset})"
    if place.kind == "input":
        return f"in->{place.field}"
    if place.kind == "output":
        return f"out->{place.field}"
    return weight_symbol(prefix, place.field)


def _uses_descriptor(program: Program) -> list[str]:
    names = []
    for step in program.steps:
        if step.kind == "tvm":
            for name in step.inputs + step.outputs:
                if name not in names:
                    names.append(name)
    return names


def _descriptors(prefix: str, entry: Entry, declared: set[str]) -> tuple[list[str], list[str]]:
    """Static DLTensor descriptors of the values an entry passes to TVM's glue but those `declared` by
    another entry (constants and state, the same everywhere); (lines, statements setting data pointers
    of caller memory at run time). Adds the entry's to `declared`."""
    lines, runtime = [], []
    for name in _uses_descriptor(entry.program):
        if name in declared:
            continue
        declared.add(name)
        value = entry.program.values[name]
        place = entry.placement.of(entry.program, name)
        symbol = _descriptor(prefix, name)
        dims = ", ".join(str(d) for d in value.shape) or "1"
        _, code, bits = DTYPES[value.dtype]
        if place.kind in ("input", "output"):
            data = "NULL"
            runtime.append(f"  {symbol}.data = (void *){_pointer(prefix, entry, name)};")
        else:
            data = f"(void *){_pointer(prefix, entry, name)}"
        lines.append(f"static int64_t {prefix}_shape_{name}[{max(len(value.shape), 1)}] = {{{dims}}};")
        lines.append(f"static DLTensor {symbol} = {{{data}, {{kDLCPU, 0}}, {len(value.shape)}, "
                     f"{{{code}, {bits}, 1}}, {prefix}_shape_{name}, NULL, 0}};  /* {_type_text(value)} */")
    return lines, runtime


_CALL_HELPER = """\
/* Calls a TIR function of TVM's glue with tensors, as tvm-ffi arguments (DLTensor pointers). */
static int32_t {prefix}_call(int32_t (*function)(void *, void *, int32_t, void *), DLTensor *const *tensors,
                             int32_t count, void *workspace, size_t workspace_bytes)
{{
  TVMFFIAny args[{max_args}];
  TVMFFIAny result;
  int32_t i;
  memset(args, 0, sizeof(args));
  memset(&result, 0, sizeof(result));
  for (i = 0; i < count; ++i) {{
    args[i].type_index = kTVMFFIDLTensorPtr;
    args[i].v_ptr = tensors[i];
  }}
  result.type_index = kTVMFFINone;
  dpl_workspace_set(workspace, workspace_bytes);
  return function(NULL, args, count, &result);
}}
"""


def _step_comment(entry: Entry, number: int, step: Step, ops: dict[str, Function]) -> str:
    outs = ", ".join(f"{n} {_type_text(entry.program.values[n])}" for n in step.outputs)
    if step.kind == "tvm":
        what = f"TVM {step.callee}"
    elif step.kind == "deeploy":
        what = f"deeploy {summary(ops[step.callee].spec)}"
    else:
        what = "copy"
    return f"  /* {number}. {what}: {outs or 'in place'} <- {', '.join(step.inputs)} */"


def _step_code(inp: ProjectInput, entry: Entry, index: int, step: Step, ops: dict[str, Function]) -> list[str]:
    """The C of an entry's step `index`; it reports failure as its project-wide step number."""
    prefix, number = inp.prefix, entry.first_step + index + 1
    lines = [_step_comment(entry, number, step, ops)]
    if step.kind == "tvm":
        tensors = ", ".join(f"&{_descriptor(prefix, n)}" for n in step.inputs + step.outputs)
        workspace = entry.placement.workspaces.get(index)
        ws = "NULL, 0" if workspace is None else \
            f"{arena_symbol(prefix, workspace[0])} + {workspace[1]}, {workspace[2]}"
        lines += ["  {",
                  f"    DLTensor *const tensors[] = {{{tensors}}};",
                  f"    if ({prefix}_call({inp.glue.symbols[step.callee]}, tensors, "
                  f"{len(step.inputs) + len(step.outputs)}, {ws}) != 0) {{",
                  f"      return {number};",
                  "    }",
                  "  }"]
    elif step.kind == "deeploy":
        fn = ops[step.callee]
        args = [f"(const {ctype(t.dtype)} *){_pointer(prefix, entry, n)}" for n, t in zip(step.inputs, fn.inputs)]
        args.append(f"({ctype(fn.output.dtype)} *){_pointer(prefix, entry, step.outputs[0])}")
        lines.append(f"  {step.callee}({', '.join(args)});")
    else:
        (source,), (target,) = step.inputs, step.outputs
        lines.append(f"  memcpy({_pointer(prefix, entry, target)}, {_pointer(prefix, entry, source)}, "
                     f"{entry.program.values[target].nbytes});")
    return lines


def _io_copies(prefix: str, entry: Entry) -> tuple[list[str], list[str]]:
    """In io_in_arena mode: copy the caller's inputs in and the outputs out (when given)."""
    if not entry.placement.io_in_arena:
        return [], []
    p, fields = entry.program, entry.placement.io_fields
    copy_in = ["  if (in != NULL) {"] + [
        f"    memcpy({_pointer(prefix, entry, n)}, in->{fields[n]}, {p.values[n].nbytes});"
        for n in p.inputs] + ["  }"]
    copy_out = ["  if (out != NULL) {"] + [
        f"    memcpy(out->{fields[n]}, {_pointer(prefix, entry, n)}, {p.values[n].nbytes});"
        for n in p.outputs] + ["  }"]
    return copy_in, copy_out


def _run_source(inp: ProjectInput, entry: Entry, runtime: list[str], ops: dict[str, Function]) -> str:
    """An entry's run function: its steps in order, each bracketed for the profiler."""
    copy_in, copy_out = _io_copies(inp.prefix, entry)
    body = [] if entry.placement.io_in_arena else ["  if (in == NULL || out == NULL) {", "    return -1;", "  }"]
    body += runtime + copy_in
    for i, step in enumerate(entry.program.steps):
        number = entry.first_step + i + 1
        body += [f"  DPL_STEP_BEGIN({number});"] + _step_code(inp, entry, i, step, ops) + \
            [f"  DPL_STEP_END({number});"]
    body += copy_out
    return "\n".join([f"int {entry.stem}_run(const struct {entry.stem}_inputs *in, struct {entry.stem}_outputs *out)",
                      "{", *body, "  return 0;", "}"])


def _io_accessors(prefix: str, entry: Entry, declarations: bool) -> list[str]:
    if not entry.placement.io_in_arena:
        return []
    p, lines = entry.program, []
    for kind, names, qualifier in (("input", p.inputs, ""), ("output", p.outputs, "const ")):
        for name in names:
            field = entry.placement.io_fields[name]
            signature = f"{qualifier}{ctype(p.values[name].dtype)} *{entry.stem}_{kind}_{field}(void)"
            if declarations:
                lines.append(f"/* The {kind} {field} in the arena ({_type_text(p.values[name])}). */")
                lines.append(signature + ";")
            else:
                lines += [signature, "{", f"  return ({qualifier}{ctype(p.values[name].dtype)} *)"
                          f"{_pointer(prefix, entry, name)};", "}"]
    return lines


def _state_accessors(inp: ProjectInput, declarations: bool) -> list[str]:
    """`<prefix>_state_<name>()` per state tensor and `<prefix>_state_reset()`, which zeroes them all."""
    prefix, state = inp.prefix, inp.state
    if not state.offsets:
        return []
    lines = []
    if declarations:
        upper = prefix.upper()
        lines += [f"/* State: tensors the functions write in place and keep across calls, at the start of the "
                  f"{state.level} arena", "   (not in the structs). Zero them with the reset before a new sequence. */",
                  f"#define {upper}_NUM_STATES {len(state.offsets)}"]
        for value in inp.state_values():
            stem = f"{upper}_STATE_{value.name.upper()}"
            lines += [f"#define {stem}_SHAPE {{{', '.join(str(d) for d in value.shape) or '1'}}}",
                      f"#define {stem}_ELEMENTS {value.elements}", f"#define {stem}_BYTES {value.nbytes}"]
    for value in inp.state_values():
        signature = f"{ctype(value.dtype)} *{prefix}_state_{value.name}(void)"
        pointer = f"({arena_symbol(prefix, state.level)} + {state.offsets[value.name]})"
        lines += [f"/* {_type_text(value)} */", signature + ";"] if declarations else \
            [signature, "{", f"  return ({ctype(value.dtype)} *){pointer};", "}"]
    if declarations:
        lines += ["/* Zeroes every state tensor. */", f"void {prefix}_state_reset(void);"]
    else:
        lines += [f"void {prefix}_state_reset(void)", "{",
                  f"  memset({arena_symbol(prefix, state.level)}, 0, {state.nbytes});", "}"]
    return lines


def _accessors(inp: ProjectInput, declarations: bool) -> str:
    lines = [line for entry in inp.entries for line in _io_accessors(inp.prefix, entry, declarations)]
    lines += _state_accessors(inp, declarations)
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def _memory_lines(inp: ProjectInput) -> list[str]:
    lines = []
    for entry in inp.entries:
        name = f"{entry.function}: " if len(inp.entries) > 1 else ""
        for level, plan in entry.placement.plan.levels.items():
            lines.append(f"{name}{level} arena: {plan.arena_bytes} bytes (lower bound {plan.lower_bound}, "
                         f"{plan.method} {plan.status}, {plan.buffers} blocks, {len(plan.inplace)} in place)")
    if inp.state.offsets:
        lines.append(f"state: {inp.state.nbytes} bytes at the start of the {inp.state.level} arena, kept across "
                     "calls; the activations follow")
    return lines or ["no arena"]


def _contents(inp: ProjectInput) -> str:
    """What the network file holds, for its first comment."""
    prefix = inp.prefix

    def counts(p: Program) -> tuple[int, int, int]:
        return len(p.steps), sum(s.kind == "tvm" for s in p.steps), sum(s.kind == "deeploy" for s in p.steps)

    if len(inp.entries) == 1:
        n, tvm, deeploy = counts(inp.entries[0].program)
        return (f"the network as a fixed sequence of {n} calls,\n * {tvm} into TVM's glue ({prefix}_glue.c) and "
                f"{deeploy} into the offloaded ops ({prefix}_ops.c).")
    each = [f" * {e.function}: {e.stem}_run, {n} calls ({tvm} into TVM's glue, {deeploy} offloaded)"
            for e in inp.entries for n, tvm, deeploy in [counts(e.program)]]
    return (f"the network's functions, each a fixed sequence of calls\n * into TVM's glue ({prefix}_glue.c) and "
            f"the offloaded ops ({prefix}_ops.c):\n" + "\n".join(each))


def network_source(inp: ProjectInput) -> str:
    prefix = inp.prefix
    ops = {fn.symbol: fn for fn in inp.offloaded}
    steps = [s for e in inp.entries for s in e.program.steps]
    arenas = []
    for level in inp.levels():
        size = inp.arena_bytes(level)
        if not size:
            continue
        arenas.append(f"/* {level} arena: {size} bytes; define {prefix.upper()}_ARENA_{level}_PLACEMENT "
                      f"to place it (e.g. a section attribute). */")
        arenas.append(f"#ifndef {prefix.upper()}_ARENA_{level}_PLACEMENT")
        arenas.append(f"#define {prefix.upper()}_ARENA_{level}_PLACEMENT")
        arenas.append("#endif")
        arenas.append(f"static uint8_t {arena_symbol(prefix, level)}[{size}] DPL_ALIGNED(16) "
                      f"{prefix.upper()}_ARENA_{level}_PLACEMENT;")
    weights = [f"extern const {ctype(value.dtype)} {weight_symbol(prefix, name)}[{value.elements}];"
               for name, (value, _) in inp.constants().items()]
    glue = [f"int32_t {inp.glue.symbols[name]}(void *self, void *args, int32_t num_args, void *result);"
            for name in sorted({s.callee for s in steps if s.kind == "tvm"})]
    op_decls = [_entry_prototype(ops[name]) for name in sorted({s.callee for s in steps if s.kind == "deeploy"})]
    descriptors, runs, declared = [], [], set()
    for entry in inp.entries:
        lines, runtime = _descriptors(prefix, entry, declared)
        descriptors += lines
        runs.append(_run_source(inp, entry, runtime, ops))
    max_args = max((len(s.inputs) + len(s.outputs) for s in steps if s.kind == "tvm"), default=0)

    def section(title, lines):
        return f"/* {title} */\n" + "\n".join(lines) + "\n" if lines else ""

    return Template(template("project_network.c.tmpl")).substitute(
        prefix=prefix, contents=_contents(inp),
        memory_comment="\n".join(f" * {line}" for line in _memory_lines(inp)),
        arenas="\n".join(arenas) + "\n" if arenas else "",
        weights=section(f"Weights read by TVM's glue ({prefix}_weights.c).", weights),
        glue=section(f"TVM's glue ({prefix}_glue.c).", glue),
        ops=section(f"Offloaded ops ({prefix}_ops.c).", op_decls),
        descriptors=section("Tensor descriptors for TVM's glue.", ["\n".join(descriptors)] if descriptors else []),
        call_helper=_CALL_HELPER.format(prefix=prefix, max_args=max_args) if max_args else "",
        runs="\n\n".join(runs), accessors=_accessors(inp, declarations=False))


# ---- the public header ---------------------------------------------------------------------------

def _io_macros(entry: Entry) -> tuple[list[str], dict[str, list[str]]]:
    """An entry's size macros and struct fields."""
    p, upper = entry.program, entry.stem.upper()
    macros, fields = [], {"input": [], "output": []}
    for kind, names in (("input", p.inputs), ("output", p.outputs)):
        macros.append(f"#define {upper}_NUM_{kind.upper()}S {len(names)}")
        total = 0
        for name in names:
            value = p.values[name]
            field = entry.placement.io_fields[name]
            stem = f"{upper}_{kind.upper()}_{field.upper()}"
            macros.append(f"/* {kind} {field}: {_type_text(value)} */")
            macros.append(f"#define {stem}_NDIM {len(value.shape)}")
            macros.append(f"#define {stem}_SHAPE {{{', '.join(str(d) for d in value.shape) or '1'}}}")
            macros.append(f"#define {stem}_ELEMENTS {value.elements}")
            macros.append(f"#define {stem}_BYTES {value.nbytes}")
            fields[kind].append(f"  {ctype(value.dtype)} {field}[{value.elements}]; /* {_type_text(value)} */")
            total += value.nbytes
        macros.append(f"#define {upper}_{kind.upper()}S_BYTES {total}")
        macros.append("")
    return macros, fields


def _structs(entry: Entry, fields: dict[str, list[str]], several: bool) -> str:
    whose = f"{entry.function}'s" if several else "The network's"
    return (f"/* {whose} inputs and outputs (row-major, contiguous). */\n"
            f"struct {entry.stem}_inputs {{\n{chr(10).join(fields['input']) or '  char unused;'}\n}};\n\n"
            f"struct {entry.stem}_outputs {{\n{chr(10).join(fields['output']) or '  char unused;'}\n}};")


def _run_declaration(entry: Entry, several: bool) -> str:
    io_note = ("\n   Inputs and outputs live in the arena: `in` (when not NULL) is copied in first, the outputs\n"
               "   are copied to `out` (when not NULL) last; or use the accessors below and pass NULL."
               if entry.placement.io_in_arena else " `in` and `out` must not overlap.")
    what = entry.function if several else "the network"
    return (f"/* Runs {what}. Returns 0 on success, -1 if `in` or `out` is NULL where it is needed, or k > 0\n"
            f"   when step k failed (an error raised in TVM's glue).{io_note} */\n"
            f"int {entry.stem}_run(const struct {entry.stem}_inputs *in, struct {entry.stem}_outputs *out);")


def _usage(inp: ProjectInput) -> str:
    first = inp.entries[0].stem
    lines = []
    if inp.state.offsets:
        lines.append(f" *   {inp.prefix}_state_reset();   zero the state (kept across calls) before a new sequence")
    lines += [f" *   static struct {first}_inputs in;    fill in.<input>",
              f" *   static struct {first}_outputs out;",
              f" *   int rc = {first}_run(&in, &out);   0 on success"]
    lines += [f" *   (likewise {e.stem}_run with struct {e.stem}_inputs and {e.stem}_outputs)" for e in inp.entries[1:]]
    return "\n".join(lines)


def header_source(inp: ProjectInput, weight_bytes: int) -> str:
    prefix, upper = inp.prefix, inp.prefix.upper()
    several = len(inp.entries) > 1
    macros, structs = [], []
    for entry in inp.entries:
        entry_macros, fields = _io_macros(entry)
        macros += entry_macros
        structs.append(_structs(entry, fields, several))
    memory = [f"#define {upper}_ARENA_{level}_BYTES {inp.arena_bytes(level)}" for level in inp.levels()]
    if inp.state.offsets:
        memory.append(f"#define {upper}_STATE_BYTES {inp.state.nbytes}")
    memory.append(f"#define {upper}_WEIGHTS_BYTES {weight_bytes}")
    memory.append(f"#define {upper}_IO_IN_ARENA {int(inp.entries[0].placement.io_in_arena)}")
    return Template(template("project_header.h.tmpl")).substitute(
        prefix=prefix, guard=f"{upper}_H", usage=_usage(inp), description=inp.description,
        weights_section=inp.weights_section, io_macros="\n".join(macros).rstrip(), structs="\n\n".join(structs),
        memory_macros="\n".join(memory), runs="\n\n".join(_run_declaration(e, several) for e in inp.entries),
        accessors=_accessors(inp, declarations=True))


# ---- the other files -----------------------------------------------------------------------------

def support_header(weights_section: str) -> str:
    return Template(template("project_support.h.tmpl")).substitute(weights_section=weights_section)


def runtime_source() -> str:
    return Template(template("project_runtime.c.tmpl")).substitute()


def makefile(prefix: str, sources: list[str], headers: list[str], hal: list[str], rv32: Build) -> str:
    return Template(template("project_Makefile.tmpl")).substitute(
        prefix=prefix, upper=prefix.upper(), sources=" ".join(sources), headers=" ".join(headers),
        hal=" ".join(hal), hal_rv32=" ".join(HAL_SOURCES), cross_compiler=CROSS_COMPILER,
        toolchain_flags=" ".join(TOOLCHAIN_FLAGS), march=rv32.isa.march, mabi=rv32.isa.mabi,
        isa_reason=rv32.isa.reason, harts=rv32.harts, steps=rv32.steps, l1_bytes=rv32.l1_bytes,
        l2_bytes=rv32.l2_bytes)


def test_vectors_source(prefix: str, program: Program, fields: dict[str, str], inputs: list[np.ndarray],
                        expected: list[np.ndarray], llvm: list[np.ndarray]) -> str:
    lines = [f"/* {prefix}_test_vectors.h (generated by tvm-deeploy; do not edit): test inputs, the reference",
             " * outputs (TVM's VM running relax.build of the same module) and TVM's llvm outputs. */",
             f"#ifndef {prefix.upper()}_TEST_VECTORS_H", f"#define {prefix.upper()}_TEST_VECTORS_H", ""]
    items = []
    for name, array in zip(program.inputs, inputs):
        items.append(f"  {{ /* {fields[name]} */\n{_indent(c_array_items(array, program.values[name].dtype))}\n  }},")
    if not items:
        items = ["  0,"]
    lines.append(f"static const struct {prefix}_inputs {prefix}_test_inputs = {{\n" + "\n".join(items) + "\n};")
    for name, ref, other in zip(program.outputs, expected, llvm):
        value = program.values[name]
        for kind, array in (("expected", ref), ("llvm", other)):
            lines.append(f"static const {ctype(value.dtype)} {prefix}_{kind}_{fields[name]}[{value.elements}] = "
                         f"{{\n{c_array_items(array, value.dtype)}\n}};")
    lines += ["", "#endif", ""]
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.split("\n"))


_DIFFERENCE = """\
/* |a - b|, 0 for equal values (infinities included) and for two NaNs, infinite for one NaN. */
static double difference(double a, double b)
{
  if (a == b || (isnan(a) && isnan(b))) {
    return 0.0;
  }
  return isnan(a) || isnan(b) ? INFINITY : fabs(a - b);
}
"""

_CHECK_FLOAT = """\
static void check_float(const char *name, const {ctype} *y, const {ctype} *expected, const {ctype} *llvm, long n)
{{
  long i, wrong = 0;
  double scale = 0.0, worst = 0.0, llvm_worst = 0.0, llvm_max = 0.0;
  for (i = 0; i < n; ++i) {{
    scale = isfinite((double)expected[i]) ? fmax(scale, fabs((double)expected[i])) : scale;
    llvm_max = isfinite((double)llvm[i]) ? fmax(llvm_max, fabs((double)llvm[i])) : llvm_max;
  }}
  for (i = 0; i < n; ++i) {{
    double diff = difference(y[i], expected[i]);
    if (!(diff <= FP32_TOLERANCE * scale)) {{
      ++wrong;
    }}
    worst = fmax(worst, diff);
    llvm_worst = fmax(llvm_worst, difference(y[i], llvm[i]));
  }}
  printf("%s: %ld elements, %ld errors (largest difference %.9g, tolerance %.3g), "
         "largest difference from TVM llvm %.9g\\n", name, n, wrong, worst, FP32_TOLERANCE * scale, llvm_worst);
  errors += wrong;
  total += n;
  llvm_diff = fmax(llvm_diff, llvm_worst);
  llvm_scale = fmax(llvm_scale, llvm_max);
}}
"""

_CHECK_INT = """\
static void check_{ctype}(const char *name, const {ctype} *y, const {ctype} *expected, const {ctype} *llvm, long n)
{{
  long i, wrong = 0;
  double llvm_worst = 0.0, llvm_max = 0.0;
  for (i = 0; i < n; ++i) {{
    if (y[i] != expected[i]) {{
      ++wrong;
    }}
    llvm_worst = fmax(llvm_worst, fabs((double)y[i] - (double)llvm[i]));
    llvm_max = fmax(llvm_max, fabs((double)llvm[i]));
  }}
  printf("%s: %ld elements, %ld errors (exact), largest difference from TVM llvm %.0f\\n", name, n, wrong,
         llvm_worst);
  errors += wrong;
  total += n;
  llvm_diff = fmax(llvm_diff, llvm_worst);
  llvm_scale = fmax(llvm_scale, llvm_max);
}}
"""


# The drivers' step profile (DPL_PROFILE builds): run_project parses these lines.
PRINT_STEP_PROFILE = """\
#ifdef DPL_PROFILE
/* One line per step of the network: the DMA bytes it moved and the instructions each hart ran. */
static void print_profile(void)
{
  int32_t step, hart;
  for (step = 1; step <= DPL_PROFILE_STEPS; ++step) {
    printf("Profile step %ld: dma_to_l1 %llu dma_to_l2 %llu instructions", (long)step,
           (unsigned long long)dpl_profile_dma_bytes(step, 0), (unsigned long long)dpl_profile_dma_bytes(step, 1));
    for (hart = 0; hart < dpl_profile_harts(); ++hart) {
      printf(" %llu", (unsigned long long)dpl_profile_instructions(step, hart));
    }
    printf("\\n");
  }
}
#endif
"""


def main_source(prefix: str, program: Program, fields: dict[str, str]) -> str:
    functions, checks = {}, []
    for name in program.outputs:
        value = program.values[name]
        c = ctype(value.dtype)
        field = fields[name]
        if value.dtype in ("float32", "float64"):
            functions.setdefault("difference", _DIFFERENCE)
            functions.setdefault(f"f{c}", _CHECK_FLOAT.replace("check_float", f"check_{c}").format(ctype=c))
        else:
            functions.setdefault(c, _CHECK_INT.format(ctype=c))
        checks.append(f'  check_{c}("{field} {_type_text(value)}", outputs.{field}, {prefix}_expected_{field}, '
                      f"{prefix}_llvm_{field}, {value.elements});")
    return Template(template("project_main.c.tmpl")).substitute(
        prefix=prefix, tolerance=f"{FP32_TOLERANCE:g}", check_functions="\n".join(functions.values()),
        print_profile=PRINT_STEP_PROFILE,
        checks="\n".join(checks))
