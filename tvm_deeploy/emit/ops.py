"""Op specs -> C source, by filling the templates in `codegen/`.

Output is deterministic (same specs, same bytes) and C99 that also compiles as C++ (TVM's
`export_library` compiles "c" modules with g++). The MCU part (kernels, constants, entries) has no
host dependency; the tvm-ffi wrappers the Relax VM calls are a separate, host-only section.
"""

from __future__ import annotations

import math
from string import Template

import numpy as np

from ..offload.reference import EXP2_LUT
from ..offload.functions import Function
from ..offload.specs import AttentionSpec, GemmSpec, Operand, SoftmaxSpec, Strides, summary
from ..targets import npu
from ..targets.resources import hal_source, kernel_sources, template

C_TYPES = {"float32": "float", "int8": "int8_t", "int32": "int32_t"}
DL_TYPES = {"float32": ("kDLFloat", 32), "int8": ("kDLInt", 8), "int32": ("kDLInt", 32)}
REQUANT_MODES = {"none": "DPL_REQUANT_NONE", "fixed": "DPL_REQUANT_FIXED", "int_ops": "DPL_REQUANT_INT_OPS"}
CAUSAL = {"none": "DPL_CAUSAL_NONE", "top_left": "DPL_CAUSAL_TOP_LEFT", "bottom_right": "DPL_CAUSAL_BOTTOM_RIGHT"}


def c_float(value) -> str:
    """An exact C literal for a float32 value."""
    value = float(np.float32(value))
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0 else "-INFINITY"
    return f"{value.hex()}f"


def _c_array(name: str, values: np.ndarray, dtype: str, section: str = "DPL_WEIGHTS") -> str:
    flat = values.reshape(-1)
    if dtype == "float32":
        items = [c_float(v) for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    per_line = 8 if dtype == "float32" else 16
    lines = ["  " + ", ".join(items[i:i + per_line]) + "," for i in range(0, len(items), per_line)]
    body = "\n".join(lines)
    return f"static const {C_TYPES[dtype]} {name}[{len(items)}] {section} = {{\n{body}\n}};"


class ConstantPool:
    """The constant arrays of a module's entries, each stored once: entries that hold the same weights
    (a model's prompt and decode functions) share one array."""

    def __init__(self):
        self.symbols: dict[tuple, str] = {}
        self.definitions: list[str] = []

    def add(self, symbol: str, values: np.ndarray, dtype: str, section: str) -> str:
        values = np.ascontiguousarray(values)
        key = (dtype, section, values.size, values.tobytes())
        if key not in self.symbols:
            self.symbols[key] = symbol
            self.definitions.append(_c_array(symbol, values, dtype, section))
        return self.symbols[key]


class _Body:
    """Collects the constants and statements of one entry function."""

    def __init__(self, fn: Function, pool: ConstantPool):
        self.fn = fn
        self.pool = pool
        self.constants: list[str] = []
        self.lines: list[str] = []

    def constant(self, name: str, values: np.ndarray, dtype: str, section: str = "DPL_WEIGHTS") -> str:
        return self.pool.add(f"{self.fn.symbol}_{name}", np.asarray(values), dtype, section)

    def declare(self, text: str) -> None:
        self.constants.append(text)

    def operand(self, name: str, op: Operand | None) -> str:
        """A C expression for the operand's data pointer."""
        if op is None:
            return "NULL"
        if op.is_const:
            return self.constant(name, op.const, op.dtype)
        return f"in{op.param}"


def _strides(s: Strides | None) -> str:
    return "{0, 0, 0, 0}" if s is None else f"{{{s.batch}, {s.head}, {s.seq}, {s.feat}}}"


def _offset_table(body: _Body, name: str, offsets: list[int], contiguous: int) -> str:
    """NULL when batches are contiguous (batch b at b * contiguous), else a table of offsets."""
    if offsets == [b * contiguous for b in range(len(offsets))]:
        return "NULL"
    return body.constant(name, np.array(offsets, np.int32), "int32")


def _emit_gemm(body: _Body, spec: GemmSpec) -> None:
    tiling = body.fn.tiling
    sym = body.fn.symbol
    a = body.operand("a", spec.a)
    if tiling.engine == "npu":  # packed for, and placed in, the NPU's weight memory
        b = body.constant("npu_weights", npu.pack_weights(spec.b.const, spec.b_transposed), "int8",
                          "DPL_NPU_WEIGHTS")
    else:
        b = body.operand("b", spec.b)
    batch = len(spec.batch_offsets("a"))
    a_offsets = _offset_table(body, "a_offsets", spec.batch_offsets("a"), spec.m * spec.k)
    b_offsets = _offset_table(body, "b_offsets", spec.batch_offsets("b"), spec.k * spec.n)
    bias, rq = "NULL", "NULL"
    if spec.dtype == "float32":
        bias = body.operand("bias", spec.bias)
    else:
        requant = spec.requant
        vectors = {}
        for field in ("bias", "mul", "add", "shift"):
            values = getattr(requant, field)
            vectors[field] = "NULL" if values is None else body.constant(f"rq_{field}", values, "int32")
        body.declare(
            f"static const dpl_requant_t {sym}_rq = {{{REQUANT_MODES[requant.mode]}, "
            f"{vectors['bias']}, {vectors['mul']}, {vectors['add']}, {vectors['shift']}, "
            f"{requant.out_zp}, {requant.lo}, {requant.hi}}};")
        rq = f"&{sym}_rq"
    slots = ", ".join("{%d, %d}" % pair for pair in (tiling.l1_a, tiling.l1_b, tiling.l1_y))
    body.declare(
        f"/* {tiling.tiles} tiles of {tiling.tile_m}x{tiling.tile_n} on "
        f"{'the NPU' if tiling.engine == 'npu' else f'{tiling.cores} cores'}, "
        f"{tiling.l1_bytes} bytes of L1, DMA {tiling.dma_in_bytes} in / {tiling.dma_out_bytes} out */\n"
        f"static const dpl_gemm_plan_t {sym}_plan = {{{'DPL_F32' if spec.dtype == 'float32' else 'DPL_S8'}, "
        f"{spec.m}, {spec.n}, {spec.k}, {int(spec.b_transposed)}, {tiling.tile_m}, {tiling.tile_n}, {batch}, "
        f"{a_offsets}, {b_offsets}, {slots}, {tiling.cores}, {spec.a_zp}, {spec.b_zp}, "
        f"{'DPL_ENGINE_NPU' if tiling.engine == 'npu' else 'DPL_ENGINE_CLUSTER'}}};")
    body.lines.append(f"  dpl_gemm_tiled(&{sym}_plan, DPL_L1, {a}, {b}, out, {bias}, {rq});")


def _emit_softmax(body: _Body, spec: SoftmaxSpec) -> None:
    x = body.operand("x", spec.x)
    body.lines.append(f"  dpl_softmax_f32({x}, out, {spec.rows}, {spec.cols});")


def _emit_attention(body: _Body, spec: AttentionSpec) -> None:
    t = body.fn.tiling
    sym = body.fn.symbol
    q, k, v = body.operand("q", spec.q), body.operand("k", spec.k), body.operand("v", spec.v)
    mask = body.operand("mask", spec.mask)
    quant = spec.quant
    ints = [0] * 11 if quant is None else [
        quant.q_zp, quant.k_zp, quant.v_zp, quant.out_zp, quant.exp_mul, quant.exp_shift, quant.e_shift,
        quant.out_mul, quant.out_shift, quant.lo, quant.hi]
    strides = ", ".join(_strides(x) for x in (spec.q_strides, spec.k_strides, spec.v_strides, spec.mask_strides,
                                               spec.out_strides))
    slots = ", ".join("{%d, %d}" % pair for pair in (t.l1_q, t.l1_k, t.l1_v, t.l1_mask, t.l1_o))
    body.declare(
        f"/* {t.tiles} row tiles of {t.tile_h} heads x {t.tile_q} queries over key blocks of {t.tile_kv}, "
        f"{t.steps} steps on {t.cores} cores, {t.l1_bytes} bytes of L1, DMA {t.dma_in_bytes} in / "
        f"{t.dma_out_bytes} out; strides q, k, v, mask, o */\n"
        f"static const dpl_attention_plan_t {sym}_plan = {{{'DPL_F32' if spec.dtype == 'float32' else 'DPL_S8'}, "
        f"{spec.batch}, {spec.heads}, {spec.kv_heads}, {spec.kv_div}, {spec.q_len}, {spec.kv_len}, {spec.qk_dim}, "
        f"{spec.v_dim}, {CAUSAL[spec.causal]}, {t.tile_h}, {t.tile_q}, {t.tile_kv}, {strides}, {slots}, "
        f"{t.l1_state}, {t.l1_scores}, {t.l1_lut}, {t.cores}, {c_float(spec.scale)}, "
        f"{', '.join(str(i) for i in ints)}}};")
    lut = "dpl_exp2_lut" if spec.dtype == "int8" else "NULL"
    body.lines.append(f"  dpl_attention_tiled(&{sym}_plan, DPL_L1, {q}, {k}, {v}, {mask}, out, {lut});")


def _exp2_lut_source() -> str:
    """reference.EXP2_LUT, once per module, for the int8 attentions."""
    items = [str(int(x)) for x in EXP2_LUT]
    lines = "\n".join("  " + ", ".join(items[i:i + 16]) + "," for i in range(0, len(items), 16))
    return ("/* 2^15 * 2^(-f/256), rounded: the integer softmax's exponent table (reference.EXP2_LUT) */\n"
            f"static const uint16_t dpl_exp2_lut[{len(items)}] DPL_WEIGHTS = {{\n{lines}\n}};\n")


def emit_function(fn: Function, pool: ConstantPool) -> str:
    """The C entry of one offloaded function as plain C99 for the MCU; its constant arrays go to `pool`."""
    body = _Body(fn, pool)
    fn.family.emit(body, fn.spec)
    params = [f"const {C_TYPES[t.dtype]} *in{i}" for i, t in enumerate(fn.inputs)]
    params.append(f"{C_TYPES[fn.output.dtype]} *out")
    used = "\n".join(body.lines)
    unused = [f"  (void)in{i};" for i in range(len(fn.inputs)) if f"in{i}" not in used]
    return Template(template("function.c.tmpl")).substitute(
        symbol=fn.symbol, summary=summary(fn.spec), constants="\n".join(body.constants),
        params=", ".join(params), body="\n".join(unused + body.lines))


def emit_ffi_wrapper(fn: Function) -> str:
    """The host-only tvm-ffi wrapper that unpacks the VM's tensors and calls the entry."""
    tensors = list(fn.inputs) + [fn.output]
    shapes, args, call_args = [], [], []
    for i, tensor in enumerate(tensors):
        dims = ", ".join(str(d) for d in tensor.shape)
        shapes.append(f"static const int64_t {fn.symbol}_shape{i}[{len(tensor.shape)}] = {{{dims}}};")
        code, bits = DL_TYPES[tensor.dtype]
        args.append(f"{{{len(tensor.shape)}, {fn.symbol}_shape{i}, {code}, {bits}}}")
        qualifier = "const " if i < len(fn.inputs) else ""
        call_args.append(f"({qualifier}{C_TYPES[tensor.dtype]} *)data[{i}]")
    return Template(template("ffi_wrapper.c.tmpl")).substitute(
        symbol=fn.symbol, count=len(tensors), shapes="\n".join(shapes), args=", ".join(args),
        call_args=", ".join(call_args))


def emit_module(functions: list[Function], ffi_wrappers: bool = True) -> str:
    """One self-contained C source: the kernel library, the L1 arena, every entry, and for the VM
    on this host the HAL's host implementation and the tvm-ffi wrappers. Without `ffi_wrappers`
    the source is the MCU part only; the program that links it supplies a HAL."""
    host_prelude, host_includes, wrappers = "", "", ""
    if ffi_wrappers:
        # pthreads for the host HAL: the feature macro must precede every system header.
        host_prelude = "#define _POSIX_C_SOURCE 200809L\n"
        host_includes = "#include <stdio.h>\n#include <tvm/ffi/c_api.h>\n"
        wrappers = (hal_source("host") + template("ffi_prelude.c.tmpl")
                    + "".join(emit_ffi_wrapper(f) for f in functions))
    l1_bytes = max((f.l1_bytes for f in functions), default=0)
    arena = ""
    if l1_bytes:
        arena = (f"/* The L1 scratchpad: every tiled op lays out its tiles from the start. */\n"
                 f"static uint64_t dpl_l1_arena[{-(-l1_bytes // 8)}] DPL_L1_PLACEMENT;\n#define DPL_L1 ((uint8_t *)dpl_l1_arena)\n")
    if any(isinstance(f.spec, AttentionSpec) and f.spec.dtype == "int8" for f in functions):
        arena += _exp2_lut_source()
    pool = ConstantPool()
    entries = "".join(emit_function(f, pool) for f in functions)
    if pool.definitions:
        entries = "/* The entries' constant arrays, each stored once. */\n" + "\n".join(pool.definitions) + "\n" + entries
    return Template(template("module.c.tmpl")).substitute(
        host_prelude=host_prelude, host_includes=host_includes, kernels=kernel_sources(), l1_arena=arena,
        functions=entries, wrappers=wrappers)
