"""Op specs -> C source, printed by the C renderer (c.py) into the templates in `codegen/`.

Output is deterministic (same specs, same bytes) and C99 that also compiles as C++ (TVM's
`export_library` compiles "c" modules with g++). The MCU part (kernels, constants, entries) has no
host dependency; the tvm-ffi wrappers the Relax VM calls are a separate, host-only section.
"""

from __future__ import annotations

import numpy as np

from ..offload.functions import Function
from ..offload.reference import EXP2_LUT
from ..offload.specs import AttentionSpec, GemmSpec, Operand, OpSpec, SoftmaxSpec, Strides, summary
from ..plan import lanes
from ..targets import npu
from ..targets.resources import hal_source, kernel_sources
from .c import C_TYPES, c_array, c_shape, initializer, render
from .kernel_args import (
    ATTENTION_PLAN,
    ATTENTION_QUANT_FIELDS,
    CAUSAL,
    DTYPE,
    ENGINE,
    GEMM_PLAN,
    QUANT,
    REQUANT,
    REQUANT_MODE,
    STRIDES,
)

DL_TYPES = {"float32": ("kDLFloat", 32), "int8": ("kDLInt", 8), "int32": ("kDLInt", 32)}




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
            self.definitions.append(c_array(symbol, values, dtype, attributes=section))
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

    def quant(self, name: str, quant) -> str:
        """A pointer to the operand's dpl_quant_t (a reference.Quant), or NULL for a float operand."""
        if quant is None:
            return "NULL"
        symbol = f"{self.fn.symbol}_{name}"
        self.declare(f"static const {QUANT.name} {symbol} = {initializer(QUANT, vars(quant))};")
        return f"&{symbol}"


def _strides(s: Strides | None) -> dict[str, int]:
    return {f.name: 0 if s is None else getattr(s, f.name) for f in STRIDES.fields}


def _dtype(spec: OpSpec) -> str:
    return DTYPE["f32" if spec.dtype == "float32" else "s8"]


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
    elif tiling.b_lanes_chunk:
        b = body.constant("b_lanes", lanes.pack_lanes(spec.b.const, spec.b_transposed), "uint32")
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
        fields = {"mode": REQUANT_MODE[requant.mode], "out_zp": requant.out_zp, "lo": requant.lo,
                  "hi": requant.hi}
        for field in ("bias", "mul", "add", "shift"):
            values = getattr(requant, field)
            fields[field] = None if values is None else body.constant(f"rq_{field}", values, "int32")
        body.declare(f"static const {REQUANT.name} {sym}_rq = {initializer(REQUANT, fields)};")
        rq = f"&{sym}_rq"
    plan = initializer(GEMM_PLAN, {
        "dtype": _dtype(spec), "m": spec.m, "n": spec.n, "k": spec.k, "b_transposed": spec.b_transposed,
        "tile_m": tiling.tile_m, "tile_n": tiling.tile_n, "batch": batch, "a_batch_offsets": a_offsets,
        "b_batch_offsets": b_offsets, "l1_a": tiling.l1_a, "l1_b": tiling.l1_b, "l1_y": tiling.l1_y,
        "cores": tiling.cores, "a_zp": spec.a_zp, "b_zp": spec.b_zp,
        "engine": ENGINE[tiling.engine], "b_lanes_chunk": tiling.b_lanes_chunk})
    body.declare(
        f"/* {tiling.tiles} tiles of {tiling.tile_m}x{tiling.tile_n} on "
        f"{'the NPU' if tiling.engine == 'npu' else f'{tiling.cores} cores'}"
        f"{f', B in lane words (sums out every {tiling.b_lanes_chunk} k)' if tiling.b_lanes_chunk else ''}, "
        f"{tiling.l1_bytes} bytes of L1, DMA {tiling.dma_in_bytes} in / {tiling.dma_out_bytes} out */\n"
        f"static const {GEMM_PLAN.name} {sym}_plan = {plan};")
    body.lines.append(f"  dpl_gemm_tiled(&{sym}_plan, DPL_L1, {a}, {b}, out, {bias}, {rq});")


def _emit_softmax(body: _Body, spec: SoftmaxSpec) -> None:
    x = body.operand("x", spec.x)
    body.lines.append(f"  dpl_softmax_f32({x}, out, {spec.rows}, {spec.cols}, {body.fn.plan['cores']});")


def _emit_attention(body: _Body, spec: AttentionSpec) -> None:
    t = body.fn.tiling
    sym = body.fn.symbol
    q, k, v = body.operand("q", spec.q), body.operand("k", spec.k), body.operand("v", spec.v)
    mask = body.operand("mask", spec.mask)
    fields = {
        "dtype": _dtype(spec), "batch": spec.batch, "heads": spec.heads, "kv_heads": spec.kv_heads,
        "kv_div": spec.kv_div, "q_len": spec.q_len, "kv_len": spec.kv_len, "qk_dim": spec.qk_dim,
        "v_dim": spec.v_dim, "causal": CAUSAL[spec.causal], "tile_h": t.tile_h, "tile_q": t.tile_q,
        "tile_kv": t.tile_kv, "q": _strides(spec.q_strides), "k": _strides(spec.k_strides),
        "v": _strides(spec.v_strides), "mask": _strides(spec.mask_strides), "o": _strides(spec.out_strides),
        "l1_q": t.l1_q, "l1_k": t.l1_k, "l1_v": t.l1_v, "l1_mask": t.l1_mask, "l1_o": t.l1_o,
        "l1_state": t.l1_state, "l1_scores": t.l1_scores, "l1_lut": t.l1_lut, "cores": t.cores,
        "scale": spec.scale}
    if spec.quant is not None:
        fields.update({name: getattr(spec.quant, name) for name in ATTENTION_QUANT_FIELDS})
    for name, dequant in (("k", spec.k_dequant), ("v", spec.v_dequant)):
        if dequant is not None:
            fields.update({f"{name}_dequant": 1, f"l1_{name}_f32": getattr(t, f"l1_{name}_f32"),
                           f"{name}_dq_scale": dequant.scale, f"{name}_dq_zp": dequant.zp})
    body.declare(
        f"/* {t.tiles} row tiles of {t.tile_h} heads x {t.tile_q} queries over key blocks of {t.tile_kv}, "
        f"{t.steps} steps on {t.cores} cores, {t.l1_bytes} bytes of L1, DMA {t.dma_in_bytes} in / "
        f"{t.dma_out_bytes} out */\n"
        f"static const {ATTENTION_PLAN.name} {sym}_plan = {initializer(ATTENTION_PLAN, fields)};")
    lut = "dpl_exp2_lut" if spec.dtype == "int8" else "NULL"
    body.lines.append(f"  dpl_attention_tiled(&{sym}_plan, DPL_L1, {q}, {k}, {v}, {mask}, out, {lut});")


def _exp2_lut_source() -> str:
    """reference.EXP2_LUT, once per module, for the int8 attentions."""
    return ("/* 2^15 * 2^(-f/256), rounded: the integer softmax's exponent table (reference.EXP2_LUT) */\n"
            + c_array("dpl_exp2_lut", EXP2_LUT, "uint16", attributes="DPL_WEIGHTS") + "\n")


def emit_function(fn: Function, pool: ConstantPool) -> str:
    """The C entry of one offloaded function as plain C99 for the MCU; its constant arrays go to `pool`."""
    body = _Body(fn, pool)
    fn.family.emit(body, fn.spec)
    params = [f"const {C_TYPES[t.dtype]} *in{i}" for i, t in enumerate(fn.inputs)]
    params.append(f"{C_TYPES[fn.output.dtype]} *out")
    used = "\n".join(body.lines)
    unused = [f"  (void)in{i};" for i in range(len(fn.inputs)) if f"in{i}" not in used]
    statements = "\n".join(unused + body.lines)
    return (f"/* {fn.symbol}: {summary(fn.spec)} */\n" + "".join(c + "\n" for c in body.constants)
            + f"void {fn.symbol}({', '.join(params)})\n{{\n{statements}\n}}\n\n")


def emit_ffi_wrapper(fn: Function) -> str:
    """The host-only tvm-ffi wrapper that unpacks the VM's tensors and calls the entry."""
    tensors = list(fn.inputs) + [fn.output]
    shapes, args, call_args = [], [], []
    for i, tensor in enumerate(tensors):
        shapes.append(f"static const int64_t {fn.symbol}_shape{i}[{max(len(tensor.shape), 1)}] = "
                      f"{c_shape(tensor.shape)};")
        code, bits = DL_TYPES[tensor.dtype]
        args.append(f"{{{len(tensor.shape)}, {fn.symbol}_shape{i}, {code}, {bits}}}")
        qualifier = "const " if i < len(fn.inputs) else ""
        call_args.append(f"({qualifier}{C_TYPES[tensor.dtype]} *)data[{i}]")
    return render(
        "ffi_wrapper.c.tmpl",
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
        wrappers = (hal_source("host") + render("ffi_prelude.c.tmpl")
                    + "".join(emit_ffi_wrapper(f) for f in functions))
    l1_bytes = max((f.l1_bytes for f in functions), default=0)
    arena = ""
    if l1_bytes:
        arena = (f"/* The L1 scratchpad: every tiled op lays out its tiles from the start. */\n"
                 f"static uint64_t dpl_l1_arena[{-(-l1_bytes // 8)}] DPL_L1_PLACEMENT;\n"
                 "#define DPL_L1 ((uint8_t *)dpl_l1_arena)\n")
    if any(isinstance(f.spec, AttentionSpec) and f.spec.dtype == "int8" for f in functions):
        arena += _exp2_lut_source()
    pool = ConstantPool()
    entries = "".join(emit_function(f, pool) for f in functions)
    if pool.definitions:
        entries = ("/* The entries' constant arrays, each stored once. */\n" + "\n".join(pool.definitions) + "\n"
                   + entries)
    return render(
        "module.c.tmpl",
        host_prelude=host_prelude, host_includes=host_includes, kernels=kernel_sources(), l1_arena=arena,
        functions=entries, wrappers=wrappers)
