"""The QuantLib / Deeploy integer dialect in TVM's ONNX importer.

Deeploy's networks keep integers in FLOAT tensors and use op types ONNX does not define (RequantShift,
iSoftmax, iRMSNorm, ...; semantics: ../shared/deeploy-tests/README.md). `prepare` reads a parsed model
and returns an `ImportPlan`: the Relax input dtypes (Deeploy's rule: the smallest integer type that holds
a sample input's values), zero-length inputs turned into empty initializers, and the converters that
`registered()` adds to TVM's converter map for the duration of one import.

Integer typing: a dialect op turns its inputs into integers, computes exactly in int32/int64 and returns
the narrowest type of its result's range (RequantShift with 256 signed levels: int8, so `MatMul ->
RequantShift` is `matmul(int8, int8 -> int32) * mul + add >> shift -> clip -> astype(int8)`, the
`gemm_int_requant` pattern). Standard arithmetic ops with an integer operand compute in int32 (float
constants holding integers become integer constants; two int8 operands of a MatMul stay int8). Float
networks are unchanged except for Deeploy's conventions: Softmax without `axis` below opset 13 is over
the last axis, Pad's opset-2 form is accepted at any opset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator

import numpy as np
import onnx
import tvm
from onnx import numpy_helper
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

LOG = logging.getLogger("tvm_deeploy.frontend")

# The dialect's op types (any domain: "", PACTOps, ai.onnx.contrib).
DIALECT_OPS = ("RequantShift", "iSoftmax", "ITAMax", "ITAPartialMax", "iGELU", "iLayerNorm", "IntegerMean",
               "TrueIntegerDiv", "IntegerDiv", "iHardswish", "iRMSNorm", "iNoNorm", "RMSNorm")

# Deeploy's input typing: the first of these that holds every value, else float32.
_SAMPLE_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32")


class DialectError(ValueError):
    """A dialect op's attributes or operands are outside what its semantics define."""


@dataclasses.dataclass(frozen=True)
class ImportPlan:
    """How to import one model: input dtypes for `from_onnx`, the converters to add, a log line."""

    dialect: tuple[str, ...]          # dialect op types found
    dtypes: dict[str, str]            # graph input -> Relax dtype (only those that change)
    emptied: tuple[str, ...]          # zero-length inputs now empty initializers
    legacy_pads: int = 0              # Pad nodes in the opset-2 form (attributes) that TVM's importer refuses

    @property
    def active(self) -> bool:
        return bool(self.dialect or self.dtypes or self.emptied or self.legacy_pads)

    def describe(self) -> str:
        parts = []
        if self.dialect:
            parts.append(f"QuantLib/Deeploy integer dialect ({', '.join(self.dialect)}): integer Relax, "
                         "last-axis Softmax before opset 13")
        if self.dtypes:
            parts.append("inputs typed " + ", ".join(f"{k}: {v}" for k, v in self.dtypes.items()))
        if self.emptied:
            parts.append("zero-length inputs as empty constants: " + ", ".join(self.emptied))
        if self.legacy_pads:
            parts.append(f"{self.legacy_pads} Pad node(s) in the opset-2 form")
        return "; ".join(parts)

    @contextlib.contextmanager
    def registered(self) -> Iterator[None]:
        """TVM's converter map with the dialect's converters, for one import (TVM reads the map through
        `onnx_frontend._get_convert_map`, which is replaced while the import runs)."""
        if not self.active:
            yield
            return
        original = onnx_frontend._get_convert_map
        extended = {**original(), **converters(original(), bool(self.dialect))}
        onnx_frontend._get_convert_map = lambda: extended
        try:
            yield
        finally:
            onnx_frontend._get_convert_map = original

    def converter_names(self) -> frozenset[str]:
        return frozenset(DIALECT_OPS) if self.active else frozenset()

    def excuses(self, complaint: str) -> bool:
        """The ONNX checker refuses op types (and domains) it does not know: for the dialect's that is not
        an invalid model."""
        return bool(self.dialect) and ("No opset import for domain" in complaint
                                       or any(f"No Op registered for {op} " in complaint for op in DIALECT_OPS))


def sample_dtype(array: np.ndarray) -> str:
    """Deeploy's type of a test input: the smallest integer type holding its values (unsigned first) when
    all are within 1e-3 of an integer, float32 otherwise; an all-zero array keeps its own kind."""
    values = np.asarray(array)
    if values.size and not np.any(values):
        return "float32" if values.dtype.kind == "f" else str(values.dtype)
    if values.dtype.kind == "f" and not (np.all(np.isfinite(values)) and np.all(np.abs(values - np.round(values))
                                                                                 <= 1e-3)):
        return "float32"
    low, high = (int(np.round(values.min())), int(np.round(values.max()))) if values.size else (0, 0)
    for name in _SAMPLE_TYPES:
        info = np.iinfo(name)
        if info.min <= low and high <= info.max:
            return name
    return "float32"


def uses_dialect(path) -> bool:
    """Whether the ONNX file at `path` has dialect ops (False when it cannot be read: load_onnx says why)."""
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 -- load_onnx reports unreadable files
        return False
    return any(node.op_type in DIALECT_OPS for node in model.graph.node)


def harness_inputs(mod, arrays) -> tuple[list[np.ndarray], int]:
    """Deeploy's harness feeding: the non-empty arrays in order feed `main`'s parameters, each cast to the
    parameter's dtype when that keeps every value; returns (arrays, how many were left over)."""
    params = mod["main"].params
    arrays = [np.asarray(a) for a in arrays if np.asarray(a).size]
    fed = []
    for param, array in zip(params, arrays):
        dtype = str(param.ty.dtype)
        cast = array.astype(dtype)
        fed.append(cast if np.array_equal(cast.astype(np.float64), array.astype(np.float64)) else array)
    return fed, max(0, len(arrays) - len(params))


def graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in graph.initializer}
    return [v for v in graph.input if v.name not in initializers]


def _zero_length(value: onnx.ValueInfoProto) -> bool:
    dims = value.type.tensor_type.shape.dim
    return any(d.HasField("dim_value") and d.dim_value == 0 for d in dims)


def prepare(model: onnx.ModelProto, inputs=None, input_dtypes: dict[str, str] | None = None) -> ImportPlan:
    """Rewrite `model` in place (zero-length inputs become empty initializers, which TVM would make
    symbolic) and plan its import. `inputs`: sample arrays in Deeploy's order (the k-th non-empty array
    feeds the k-th non-empty graph input; arrays past the last input are ignored) typing the FLOAT inputs
    by `sample_dtype`; `input_dtypes` names dtypes directly and wins."""
    graph = model.graph
    found = {node.op_type for node in graph.node} & set(DIALECT_OPS)
    live = graph_inputs(graph)
    emptied = tuple(v.name for v in live if _zero_length(v))
    for value in live:
        if value.name in emptied:
            shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            graph.initializer.append(numpy_helper.from_array(np.zeros(shape, dtype), value.name))
    live = [v for v in live if v.name not in emptied]
    dtypes: dict[str, str] = {}
    if inputs is not None:
        arrays = [np.asarray(a) for a in inputs if np.asarray(a).size]
        for value, array in zip(live, arrays):
            if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
                continue  # declared integer inputs keep their type
            dtype = sample_dtype(array)
            if dtype != "float32":
                dtypes[value.name] = dtype
    for name, dtype in (input_dtypes or {}).items():
        if name not in {v.name for v in live}:
            raise DialectError(f"input_dtypes names {name!r}, not an input of the model "
                               f"({', '.join(v.name for v in live)})")
        dtypes[name] = dtype
    legacy_pads = sum(node.op_type == "Pad" and len(node.input) == 1 and any(a.name == "pads" for a in node.attribute)
                      for node in graph.node)
    plan = ImportPlan(tuple(sorted(found)), dtypes, emptied, legacy_pads)
    if plan.active:
        LOG.info("%s", plan.describe())
    return plan


# ---------------------------------------------------------------- helpers


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def _shape(expr) -> tuple[int, ...]:
    return tuple(int(s) for s in expr.ty.shape.values)


def _is_int(expr) -> bool:
    return _dtype(expr).startswith(("int", "uint"))


def _const_values(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, tvm.ir.GenericConst) else None


def _integral(values: np.ndarray) -> bool:
    return values.dtype.kind in "iub" or bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))


def _attr(attr: dict, name: str, default=None, *, op: str):
    """An attribute as a Python number (INT, FLOAT, or a one-element TENSOR), or a tuple for INTS."""
    if name not in attr:
        if default is None:
            raise DialectError(f"{op}: attribute {name!r} missing")
        return default
    value = attr[name]
    if isinstance(value, onnx.TensorProto):
        array = numpy_helper.to_array(value).reshape(-1)
        if array.size != 1:
            raise DialectError(f"{op}: attribute {name!r} has {array.size} values, expected one")
        value = array[0].item()
    return value


def _int_attr(attr: dict, name: str, default=None, *, op: str) -> int:
    value = _attr(attr, name, default, op=op)
    if isinstance(value, tuple) or float(value) != int(value):
        raise DialectError(f"{op}: attribute {name!r} = {value} is not an integer")
    return int(value)


def _as_int(bb, expr, dtype: str = "int32"):
    """An integer tensor of `dtype` (a float tensor of the dialect holds integers: the cast is exact)."""
    values = _const_values(expr)
    if values is not None:
        if not _integral(values):
            raise DialectError(f"a constant operand holds non-integers ({values.reshape(-1)[:3]}...)")
        return relax.const(values.astype(dtype), dtype)
    return expr if _dtype(expr) == dtype else bb.emit(relax.op.astype(expr, dtype))


def _narrowest(lo: int, hi: int) -> str:
    for name in ("int8", "uint8", "int16", "uint16", "int32"):
        info = np.iinfo(name)
        if info.min <= lo and hi <= info.max:
            return name
    return "int64"


def _i(value: int, dtype: str = "int64"):
    return relax.const(np.array(value, dtype), dtype)


def _clip_to(bb, expr, lo: int, hi: int, dtype: str):
    clipped = bb.emit(relax.op.clip(expr, lo, hi))
    return clipped if _dtype(clipped) == dtype else bb.emit(relax.op.astype(clipped, dtype))


def _floor_div(bb, a, b):
    return bb.emit(relax.op.floor_divide(a, b))


def _trunc_div(bb, a, b):
    """trunc(a / b) for b > 0, by floor division of |a|."""
    magnitude = _floor_div(bb, bb.emit(relax.op.abs(a)), b)
    return bb.emit(relax.op.multiply(bb.emit(relax.op.sign(a)), magnitude))


def _value_bits(expr) -> int:
    """Bits of the magnitude of the integer values `expr`'s dtype holds (a float tensor: int32's)."""
    if not _is_int(expr):
        return 31
    return np.iinfo(_dtype(expr)).bits - (0 if _dtype(expr).startswith("u") else 1)


def _isqrt(bb, n, bits: int):
    """floor(sqrt(n)) of a non-negative int64 tensor below 2^bits, digit by digit (no float)."""
    result = bb.emit(relax.op.zeros_like(n))
    for step in range(min(bits + 1, 62) // 2, -1, -1):
        bit = _i(1 << (2 * step))
        candidate = bb.emit(relax.op.add(result, bit))
        fits = bb.emit(relax.op.greater_equal(n, candidate))
        n = bb.emit(relax.op.where(fits, relax.op.subtract(n, candidate), n))
        halved = bb.emit(relax.op.right_shift(result, _i(1)))
        result = bb.emit(relax.op.where(fits, relax.op.add(halved, bit), halved))
    return result


def _last_axis_sum(bb, x, keepdims=True):
    return bb.emit(relax.op.sum(x, axis=[-1], keepdims=keepdims))


# ---------------------------------------------------------------- dialect ops


def _channel_constant(values: np.ndarray, shape: tuple[int, ...], op: str, name: str) -> np.ndarray:
    """Deeploy's broadcasting of RequantShift's mul/add: numpy-style when x's shape stays, else per channel
    on axis 1."""
    if values.size == 1:
        return values.reshape(())
    try:
        if np.broadcast_shapes(values.shape, shape) == tuple(shape):
            return values
    except ValueError:
        pass
    if len(shape) >= 2 and values.size == shape[1]:
        return values.reshape((shape[1],) + (1,) * (len(shape) - 2))
    raise DialectError(f"{op}: {name} of shape {list(values.shape)} does not fit x {list(shape)}")


def requant_shift(bb, inputs, attr, op="RequantShift"):
    """y = clip(floor((x*mul + add) / div + 0.5), lo, hi) = clip((x*mul + add + div/2) >> log2(div))."""
    x, mul, add = inputs[0], inputs[1], inputs[2]
    div = _int_attr(attr, "div", op=op)
    if div < 1 or div & (div - 1):
        raise DialectError(f"{op}: div = {div} is not a power of two")
    levels = _int_attr(attr, "n_levels_out", _int_attr(attr, "n_levels", 256, op=op), op=op)
    signed = _int_attr(attr, "signed", 1, op=op)
    lo, hi = (-(levels // 2), levels // 2 - 1) if signed else (0, levels - 1)
    shape = _shape(x)
    constants = {}
    for name, expr in (("mul", mul), ("add", add)):
        values = _const_values(expr)
        if values is None or not _integral(values):
            raise DialectError(f"{op}: {name} must be a constant holding integers")
        constants[name] = _channel_constant(values.astype(np.int64), shape, op, name)
    constants["add"] = constants["add"] + div // 2
    # int32 like Deeploy's C kernel (x*mul + add stays below 2^31 in its networks); int64 for int64 x
    acc = "int64" if _dtype(x) == "int64" else "int32"
    xi = _as_int(bb, x, acc)
    scaled = bb.emit(relax.op.multiply(xi, relax.const(constants["mul"].astype(acc), acc)))
    shifted = bb.emit(relax.op.add(scaled, relax.const(constants["add"].astype(acc), acc)))
    shifted = bb.emit(relax.op.right_shift(shifted, _i(div.bit_length() - 1, acc)))
    return _clip_to(bb, shifted, lo, hi, _narrowest(lo, hi))


def i_softmax(bb, inputs, attr, op="iSoftmax"):
    coeff_a, coeff_b, coeff_c, log2 = (_int_attr(attr, n, op=op) for n in ("coeffA", "coeffB", "coeffC", "log2"))
    levels = _int_attr(attr, "n_levels", 256, op=op)
    if log2 < 1:
        raise DialectError(f"{op}: log2 = {log2} must be positive")
    x = _as_int(bb, inputs[0], "int64")
    shifted = bb.emit(relax.op.subtract(x, bb.emit(relax.op.max(x, axis=[-1], keepdims=True))))
    z = _floor_div(bb, bb.emit(relax.op.negative(shifted)), _i(log2))
    p = bb.emit(relax.op.add(shifted, relax.op.multiply(z, _i(log2))))
    base = bb.emit(relax.op.add(p, _i(coeff_b)))
    poly = bb.emit(relax.op.add(relax.op.multiply(_i(coeff_a), relax.op.multiply(base, base)), _i(coeff_c)))
    # floor(poly / 2^z): poly < 2^62, so shifts past 62 give 0 (poly >= 0) or -1 (poly < 0), as floor does
    e = bb.emit(relax.op.right_shift(poly, relax.op.minimum(z, _i(62))))
    total = _last_axis_sum(bb, e)
    y = _floor_div(bb, bb.emit(relax.op.multiply(e, _i(levels - 1))), total)
    return _clip_to(bb, y, 0, levels - 1, _narrowest(0, levels - 1))


def _ita_shift(bb, diff, bits: int):
    """floor(diff * B / 2^B + 0.5) for integer diff >= 0."""
    return bb.emit(relax.op.right_shift(relax.op.add(relax.op.multiply(diff, _i(bits)), _i(1 << (bits - 1))),
                                        _i(bits)))


def _levels_bits(attr, op) -> tuple[int, int]:
    levels = _int_attr(attr, "n_levels", 256, op=op)
    bits = levels.bit_length() - 1
    if levels != 1 << bits or bits < 1:
        raise DialectError(f"{op}: n_levels = {levels} is not a power of two")
    return levels, bits


# Fixed point of ITAMax's sum: terms n_levels / 2^s are exact multiples of 2^-_ITA_FRACTION for s <= it.
_ITA_FRACTION = 40


def ita_max(bb, inputs, attr, op="ITAMax"):
    levels, bits = _levels_bits(attr, op)
    x = _as_int(bb, inputs[0], "int64")
    m = bb.emit(relax.op.max(x, axis=[-1], keepdims=True))
    s = bb.emit(relax.op.minimum(_ita_shift(bb, bb.emit(relax.op.subtract(m, x)), bits), _i(_ITA_FRACTION)))
    terms = bb.emit(relax.op.left_shift(_i(levels), relax.op.subtract(_i(_ITA_FRACTION), s)))
    total = bb.emit(relax.op.right_shift(_last_axis_sum(bb, terms), _i(_ITA_FRACTION)))
    inv = _floor_div(bb, _i(levels * (levels - 1)), total)
    y = bb.emit(relax.op.right_shift(inv, relax.op.minimum(s, _i(62))))
    return _clip_to(bb, y, 0, levels - 1, _narrowest(0, levels - 1))


def ita_partial_max(bb, inputs, attr, op="ITAPartialMax"):
    """Deeploy's C kernel: the last axis streamed in groups, the running sum rescaled at a new maximum."""
    levels, bits = _levels_bits(attr, op)
    width = _int_attr(attr, "group_width", op=op)
    x = _as_int(bb, inputs[0], "int64")
    shape = _shape(x)
    n = shape[-1]
    if width < 1:
        raise DialectError(f"{op}: group_width = {width}")
    rows = shape[:-1] + (1,)
    g = bb.emit(relax.op.full(rows, _i(-128)))
    total = bb.emit(relax.op.zeros(rows, "int64"))
    for start in range(0, n, width):
        group = bb.emit(relax.op.strided_slice(x, axes=[len(shape) - 1], begin=[start], end=[min(n, start + width)]))
        c = bb.emit(relax.op.max(group, axis=[-1], keepdims=True))
        rescale = _ita_shift(bb, bb.emit(relax.op.maximum(relax.op.subtract(c, g), _i(0))), bits)
        total = bb.emit(relax.op.right_shift(total, relax.op.minimum(rescale, _i(62))))
        g = bb.emit(relax.op.maximum(g, c))
        s = _ita_shift(bb, bb.emit(relax.op.subtract(g, group)), bits)
        terms = bb.emit(relax.op.right_shift(_i(256), relax.op.minimum(s, _i(62))))
        total = bb.emit(relax.op.add(total, _last_axis_sum(bb, terms)))
    inv = _floor_div(bb, _i((levels // 2 - 1) * 256), total)
    s = _ita_shift(bb, bb.emit(relax.op.subtract(g, x)), bits)
    y = bb.emit(relax.op.right_shift(inv, relax.op.minimum(s, _i(62))))
    return _clip_to(bb, y, 0, levels // 2 - 1, _narrowest(0, levels // 2 - 1))


def i_gelu(bb, inputs, attr, op="iGELU"):
    b, one = _int_attr(attr, "b", op=op), _int_attr(attr, "one", op=op)
    x = _as_int(bb, inputs[0], "int64")
    q = bb.emit(relax.op.add(relax.op.minimum(relax.op.abs(x), _i(-b)), _i(b)))
    big_l = bb.emit(relax.op.multiply(relax.op.sign(x), relax.op.subtract(_i(one), relax.op.multiply(q, q))))
    half = _floor_div(bb, bb.emit(relax.op.add(_i(one), big_l)), _i(2))
    return bb.emit(relax.op.astype(relax.op.multiply(x, half), "int32"))


def _norm_weight(bb, expr, op, name):
    values = _const_values(expr)
    if values is None or not _integral(values):
        raise DialectError(f"{op}: {name} must be a constant holding integers")
    return relax.const(values.astype(np.int64), "int64")


def i_layer_norm(bb, inputs, attr, op="iLayerNorm"):
    d_scale, levels = _int_attr(attr, "D", op=op), _int_attr(attr, "n_levels", 256, op=op)
    bits = 2 * _value_bits(inputs[0]) + 3
    x = _as_int(bb, inputs[0], "int64")
    count = _shape(x)[-1]
    weight, bias = _norm_weight(bb, inputs[1], op, "weight"), _norm_weight(bb, inputs[2], op, "bias")
    mean = _trunc_div(bb, _last_axis_sum(bb, x), _i(count))
    d = bb.emit(relax.op.subtract(x, mean))
    var = _floor_div(bb, _last_axis_sum(bb, bb.emit(relax.op.multiply(d, d))), _i(count))
    std = _isqrt(bb, bb.emit(relax.op.add(var, _i(1))), bits)
    scaled = _trunc_div(bb, bb.emit(relax.op.multiply(d, weight)), std)
    y = _floor_div(bb, bb.emit(relax.op.add(scaled, bias)), _i(d_scale))
    return _clip_to(bb, y, -(levels // 2), levels // 2 - 1, _narrowest(-(levels // 2), levels // 2 - 1))


def i_rms_norm(bb, inputs, attr, op="iRMSNorm"):
    d_scale, levels = _int_attr(attr, "D", op=op), _int_attr(attr, "n_levels", 256, op=op)
    bits = 2 * _value_bits(inputs[0]) + 1
    x = _as_int(bb, inputs[0], "int64")
    rank = len(_shape(x))
    axis = _int_attr(attr, "axis", -1, op=op) % rank
    axes = list(range(axis, rank))
    count = int(np.prod(_shape(x)[axis:]))
    weight = _norm_weight(bb, inputs[1], op, "weight")
    squares = bb.emit(relax.op.sum(relax.op.multiply(x, x), axis=axes, keepdims=True))
    ms = bb.emit(relax.op.add(_floor_div(bb, squares, _i(count)), _i(1)))
    std = _isqrt(bb, ms, bits)
    scaled = _trunc_div(bb, bb.emit(relax.op.multiply(x, weight)), std)
    y = _floor_div(bb, scaled, _i(d_scale))
    return _clip_to(bb, y, -(levels // 2), levels // 2 - 1, _narrowest(-(levels // 2), levels // 2 - 1))


def i_no_norm(bb, inputs, attr, op="iNoNorm"):
    d_scale, mul = _int_attr(attr, "D", op=op), _int_attr(attr, "mul", op=op)
    x = _as_int(bb, inputs[0], "int64")
    weight, bias = _norm_weight(bb, inputs[1], op, "weight"), _norm_weight(bb, inputs[2], op, "bias")
    affine = bb.emit(relax.op.add(relax.op.multiply(x, weight), bias))
    y = _floor_div(bb, bb.emit(relax.op.multiply(affine, _i(mul))), _i(d_scale))
    return bb.emit(relax.op.astype(y, "int32"))


def integer_mean(bb, inputs, attr, op="IntegerMean"):
    axes = _attr(attr, "axes", op=op)
    axes = list(axes) if isinstance(axes, tuple) else [int(axes)]
    return _rounded_mean(bb, inputs[0], axes, bool(_int_attr(attr, "keepdims", 1, op=op)))


def _rounded_mean(bb, x, axes, keepdims):
    """floor(mean + 0.5) = floor((2*sum + n) / 2n), exactly."""
    x = _as_int(bb, x, "int64")
    shape = _shape(x)
    count = int(np.prod([shape[a] for a in axes]))
    total = bb.emit(relax.op.sum(x, axis=axes, keepdims=keepdims))
    y = _floor_div(bb, bb.emit(relax.op.add(relax.op.multiply(total, _i(2)), _i(count))), _i(2 * count))
    return bb.emit(relax.op.astype(y, "int32"))


def true_integer_div(bb, inputs, attr, op="TrueIntegerDiv"):
    delta, eps, eta, y = (_int_attr(attr, n, op=op) for n in ("Delta", "eps", "eta", "y"))
    if y * eta + eps == 0:
        raise DialectError(f"{op}: y*eta + eps = 0")
    factor = (delta * eta) // (y * eta + eps)
    x = _as_int(bb, inputs[0], "int64")
    return bb.emit(relax.op.astype(relax.op.multiply(x, _i(factor)), "int32"))


def integer_div(bb, inputs, attr, op="IntegerDiv"):
    """floor(x*Delta*eta / (y*eta + eps) + 0.5) = floor((2*x*Delta*eta + den) / (2*den))."""
    delta, eps, eta = (_int_attr(attr, n, op=op) for n in ("Delta", "eps", "eta"))
    x, y = _as_int(bb, inputs[0], "int64"), _as_int(bb, inputs[1], "int64")
    den = bb.emit(relax.op.add(relax.op.multiply(y, _i(eta)), _i(eps)))
    num = bb.emit(relax.op.add(relax.op.multiply(x, _i(2 * delta * eta)), den))
    return bb.emit(relax.op.astype(_floor_div(bb, num, bb.emit(relax.op.multiply(den, _i(2)))), "int32"))


def i_hardswish(bb, inputs, attr, op="iHardswish"):
    three, six, one_over_six = (_int_attr(attr, n, op=op) for n in ("three", "six", "one_over_six"))
    x = _as_int(bb, inputs[0], "int64")
    gate = bb.emit(relax.op.clip(relax.op.add(x, _i(three)), 0, six))
    return bb.emit(relax.op.astype(relax.op.multiply(relax.op.multiply(x, gate), _i(one_over_six)), "int32"))


def rms_norm(bb, inputs, attr, op="RMSNorm"):
    """Float: x / sqrt(mean(x^2 over the last axis) + eps) * weight."""
    eps = float(_attr(attr, "eps", 1e-6, op=op))
    x, weight = inputs[0], inputs[1]
    dtype = _dtype(x)
    ms = bb.emit(relax.op.mean(relax.op.multiply(x, x), axis=[-1], keepdims=True))
    root = bb.emit(relax.op.sqrt(relax.op.add(ms, relax.const(eps, dtype))))
    return bb.emit(relax.op.multiply(relax.op.divide(x, root), weight))


_DIALECT = {"RequantShift": requant_shift, "iSoftmax": i_softmax, "ITAMax": ita_max,
            "ITAPartialMax": ita_partial_max, "iGELU": i_gelu, "iLayerNorm": i_layer_norm,
            "IntegerMean": integer_mean, "TrueIntegerDiv": true_integer_div, "IntegerDiv": integer_div,
            "iHardswish": i_hardswish, "iRMSNorm": i_rms_norm, "iNoNorm": i_no_norm, "RMSNorm": rms_norm}


# ---------------------------------------------------------------- standard ops on integers


def _fits_int8(expr) -> bool:
    if _dtype(expr) == "int8":
        return True
    values = _const_values(expr)
    return values is not None and _integral(values) and values.size > 0 and values.min() >= -128 \
        and values.max() <= 127


def _integer_operands(inputs) -> bool:
    """An integer tensor meets integer-valued constants or other integer tensors (the dialect's arithmetic)."""
    present = [i for i in inputs if i is not None]
    if not any(_is_int(i) for i in present):
        return False
    return all(_is_int(i) or (_const_values(i) is not None and _integral(_const_values(i))) for i in present)


def _wide(inputs) -> str:
    return "int64" if any(i is not None and _dtype(i) in ("int64", "uint32", "uint64") for i in inputs) else "int32"


def _arithmetic(relax_op):
    def convert(bb, inputs, attr, opset, base):
        if not _integer_operands(inputs):
            return base(bb, _floats(bb, inputs), attr)
        dtype = _wide(inputs)
        return relax_op(_as_int(bb, inputs[0], dtype), _as_int(bb, inputs[1], dtype))
    return convert


def _floats(bb, inputs):
    """Integer tensors meeting float ones (dequantization) as that float type."""
    floats = [_dtype(i) for i in inputs if i is not None and not _is_int(i)]
    if not floats or not any(i is not None and _is_int(i) for i in inputs):
        return inputs
    return onnx_frontend.onnx_input(i if i is None or not _is_int(i) else bb.emit(relax.op.astype(i, floats[0]))
                                    for i in inputs)


def _matmul_operands(bb, a, b):
    if _fits_int8(a) and _fits_int8(b):
        return _as_int(bb, a, "int8"), _as_int(bb, b, "int8")
    dtype = _wide([a, b])
    return _as_int(bb, a, dtype), _as_int(bb, b, dtype)


def _matmul(bb, inputs, attr, opset, base):
    if not _integer_operands(inputs):
        return base(bb, inputs, attr)
    a, b = _matmul_operands(bb, inputs[0], inputs[1])
    return relax.op.matmul(a, b, out_dtype="int32" if _dtype(a) != "int64" else "int64")


def _gemm(bb, inputs, attr, opset, base):
    if not _integer_operands(inputs):
        return base(bb, inputs, attr)
    alpha, beta = attr.get("alpha", 1.0), attr.get("beta", 1.0)
    if alpha != int(alpha) or beta != int(beta):
        raise DialectError(f"Gemm on integers: alpha = {alpha}, beta = {beta} are not integers")
    a, b, c = inputs[0], inputs[1], inputs[2]
    if attr.get("transA", 0):
        a = bb.emit(relax.op.permute_dims(a)) if _const_values(a) is None else relax.const(_const_values(a).T)
    if attr.get("transB", 0):
        b = bb.emit(relax.op.permute_dims(b)) if _const_values(b) is None else relax.const(_const_values(b).T)
    a, b = _matmul_operands(bb, a, b)
    y = bb.emit(relax.op.matmul(a, b, out_dtype="int32"))
    if int(alpha) != 1:
        y = bb.emit(relax.op.multiply(y, _i(int(alpha), "int32")))
    if c is None:
        return y
    c = _as_int(bb, c, "int32")
    if int(beta) != 1:
        c = bb.emit(relax.op.multiply(c, _i(int(beta), "int32")))
    return relax.op.add(y, c)


def _widened(bb, inputs, attr, opset, base):
    """Conv, ReduceSum, ...: every operand as int32, then TVM's converter."""
    if not _is_int(inputs[0]):
        return base(bb, inputs, attr)
    widened = onnx_frontend.onnx_input()
    for index, value in enumerate(inputs):
        keep = value is None or (index > 0 and _dtype(value) == "int64")  # shape-like operands (axes)
        widened.append(value if keep else _as_int(bb, value, _wide([value])))
    return base(bb, widened, attr)


def _reduce_mean(bb, inputs, attr, opset, base):
    if not _is_int(inputs[0]):
        return base(bb, inputs, attr)
    rank = len(_shape(inputs[0]))
    axes = attr.get("axes")
    if axes is None and len(inputs) > 1 and inputs[1] is not None:
        axes = tuple(int(a) for a in _const_values(inputs[1]))
    axes = sorted(a % rank for a in (axes if axes is not None else range(rank)))
    return _rounded_mean(bb, inputs[0], axes, bool(attr.get("keepdims", 1)))


def _concat(bb, inputs, attr, opset, base):
    """Zero-size constants (the emptied caches) dropped; mixed integer dtypes joined as int32."""
    kept = [i for i in inputs if not (isinstance(i, tvm.ir.GenericConst) and 0 in _shape(i))]
    if not kept:
        return inputs[0]
    dtypes = {_dtype(i) for i in kept if isinstance(i.ty, relax.TensorType)}
    if len(dtypes) > 1 and all(d.startswith(("int", "uint")) for d in dtypes):
        kept = [_as_int(bb, i, _wide(kept)) for i in kept]
    if len(kept) == 1:
        return kept[0]
    return base(bb, onnx_frontend.onnx_input(kept), attr)


def _softmax(bb, inputs, attr, opset, base, dialect: bool):
    if dialect and opset < 13 and "axis" not in attr:  # Deeploy: the last axis, whatever the opset
        return relax.op.nn.softmax(inputs[0], axis=-1)
    return base(bb, inputs, attr)


def _pad(bb, inputs, attr, opset, base):
    if len([i for i in inputs if i is not None]) == 1 and "pads" in attr:  # opset-2 form at a later opset
        return onnx_frontend.Pad._impl_v2(bb, inputs, attr, None)
    return base(bb, inputs, attr)


_STANDARD: dict[str, Callable] = {
    "Add": _arithmetic(relax.op.add), "Sub": _arithmetic(relax.op.subtract), "Mul": _arithmetic(relax.op.multiply),
    "MatMul": _matmul, "Gemm": _gemm, "Conv": _widened, "ReduceSum": _widened, "ReduceMean": _reduce_mean,
    "Concat": _concat, "Pad": _pad}


class _Converter:
    """What TVM's importer asks of a converter class: `get_converter(opset)` -> f(bb, inputs, attr, params)."""

    def __init__(self, convert, base=None):
        self._convert, self._base = convert, base

    def get_converter(self, opset):
        def convert(bb, inputs, attr, params):
            if self._base is None:
                return self._convert(bb, inputs, attr)
            tvm_convert = self._base.get_converter(opset)
            return self._convert(bb, inputs, attr, opset, lambda b, i, a: tvm_convert(b, i, a, params))
        return convert


def converters(base_map: dict, dialect: bool) -> dict:
    """The dialect's converters and the integer-aware standard ones, over TVM's `base_map`; Deeploy's
    last-axis Softmax only in a `dialect` model (ONNX's opset < 13 rule is another)."""
    table = {name: _Converter(function) for name, function in _DIALECT.items()}
    table.update({name: _Converter(function, base_map[name]) for name, function in _STANDARD.items()})
    table["Softmax"] = _Converter(functools.partial(_softmax, dialect=dialect), base_map["Softmax"])
    return table
