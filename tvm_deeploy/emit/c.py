"""The one C renderer: literals, constant arrays, templates and the kernels' argument structs.

Everything tvm-deeploy writes as C prints its values here, so a float is spelled the same exact way in a
weight array, a test vector and a kernel plan, and output is the same bytes from run to run.

    c_array("w", np.ones(3, "float32"), "float32", section="DPL_WEIGHTS")
    render("module.c.tmpl", kernels=..., ...)        # codegen/ templates, string.Template syntax
    initializer(GEMM_PLAN, {"m": 4, ...})            # {.m = 4, ...}: designated, in declaration order

A kernel argument struct is described once (`Struct`, `Field`, `Enum`; the descriptions are in
kernel_args.py); its C declaration, the initializers of generated code and the tests' ctypes mirrors all
come from it.
"""

from __future__ import annotations

import ctypes
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from string import Template

import numpy as np

from ..targets.resources import template

# float16 is stored as its IEEE binary16 bits (the standalone program's `half`, program/half.py).
C_TYPES = {"float16": "uint16_t", "float32": "float", "float64": "double", "int8": "int8_t", "int16": "int16_t", "int32": "int32_t",
           "int64": "int64_t", "uint8": "uint8_t", "uint16": "uint16_t", "uint32": "uint32_t",
           "uint64": "uint64_t", "bool": "uint8_t"}
_INT_SUFFIXES = {"int64": "LL", "uint64": "ULL", "uint32": "U"}
_ITEMS_PER_LINE = {"float32": 8, "float64": 8}  # other dtypes: 16
_LINE_WIDTH = 110  # initializers wrap before this column


# ---- literals ------------------------------------------------------------------------------------

def _hex(value: float) -> str:
    """An exact hexadecimal literal without the mantissa's trailing zeros: 0x1.8p+1 for 3.0."""
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0 else "-INFINITY"
    mantissa, exponent = value.hex().split("p")
    return f"{mantissa.rstrip('0').rstrip('.')}p{exponent}"


def _float32_literal(value: float) -> str:
    text = _hex(value)
    return text if text.endswith(("NAN", "INFINITY")) else f"{text}f"


def c_float(value) -> str:
    """An exact C literal for a float32 value (NAN and INFINITY from math.h)."""
    return _float32_literal(float(np.float32(value)))


def c_double(value) -> str:
    return _hex(float(value))


def c_int(value: int, dtype: str = "int32") -> str:
    value = int(value)
    # The most negative value has no literal of its own type.
    if dtype == "int32" and value == -(2**31):
        return "(-2147483647 - 1)"
    if dtype == "int64" and value == -(2**63):
        return "(-9223372036854775807LL - 1)"
    return f"{value}{_INT_SUFFIXES.get(dtype, '')}"


def c_literal(value, dtype: str) -> str:
    if dtype == "float32":
        return c_float(value)
    if dtype == "float64":
        return c_double(value)
    return c_int(value, dtype)


# ---- arrays --------------------------------------------------------------------------------------

def c_items(values, dtype: str) -> str:
    """The elements of an array initializer, row-major, a fixed number per indented line ("0" when
    empty, so a struct holding a zero-size array still has an initializer)."""
    flat = np.ascontiguousarray(values).reshape(-1)
    if dtype == "float32":
        items = [_float32_literal(v) for v in flat.astype(np.float32).tolist()]  # tolist: exact Python floats
    elif dtype == "float64":
        items = [c_double(v) for v in flat.tolist()]
    elif dtype == "float16":
        items = [f"0x{v:04x}" for v in flat.astype(np.float16).view(np.uint16).tolist()]
    else:
        items = [c_int(v, dtype) for v in flat.tolist()]
    if not items:
        return "0"
    per_line = _ITEMS_PER_LINE.get(dtype, 16)
    return "\n".join("  " + ", ".join(items[i:i + per_line]) + "," for i in range(0, len(items), per_line))


def c_array(name: str, values, dtype: str, storage: str = "static const", attributes: str = "") -> str:
    """The definition `<storage> <type> <name>[<size>] <attributes> = {...};` of a constant array."""
    size = np.asarray(values).size
    attributes = f" {attributes}" if attributes else ""
    return f"{storage} {C_TYPES[dtype]} {name}[{size}]{attributes} = {{\n{c_items(values, dtype)}\n}};"


_STATIC_ARRAY = re.compile(r"^static const (\w+) \w+\[(\d+)\] (\w+) = \{$", re.MULTILINE)
_C_TYPE_BYTES = {C_TYPES[dtype]: np.dtype(dtype).itemsize for dtype in C_TYPES}


def array_bytes(text: str) -> dict[str, int]:
    """The bytes of the static arrays c_array defined in `text` with one attribute (a placement macro),
    per attribute."""
    found: dict[str, int] = {}
    for match in _STATIC_ARRAY.finditer(text):
        ctype, size, attribute = match.groups()
        found[attribute] = found.get(attribute, 0) + _C_TYPE_BYTES[ctype] * int(size)
    return found


def c_shape(shape) -> str:
    """A shape as a brace list; {1} for a scalar (C has no empty initializer)."""
    return "{" + (", ".join(str(int(d)) for d in shape) or "1") + "}"


# ---- templates -----------------------------------------------------------------------------------

def fill(text: str, **fields) -> str:
    """A string.Template filled with exactly its fields: a missing or an unused field is an error."""
    pattern = Template(text)
    expected = set(pattern.get_identifiers())
    if expected != set(fields):
        raise KeyError(f"template fields: missing {sorted(expected - set(fields))}, "
                       f"unknown {sorted(set(fields) - expected)}")
    return pattern.substitute(fields)


def render(name: str, **fields) -> str:
    """The template codegen/<name> filled with exactly its fields."""
    return fill(template(name), **fields)


# ---- kernel argument structs ---------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """One member: its C type (a scalar, a pointer such as "const int32_t *", or a nested Struct), its
    comment, its element count when it is an array, and the value an initializer may leave out."""

    name: str
    ctype: str | Struct
    comment: str = ""
    count: int = 0  # an array of `count` elements; 0: not an array
    default: str | int | None = None  # None: every initializer gives it


@dataclass(frozen=True)
class Struct:
    """A struct a kernel takes, declared as `typedef struct <tag> {...} <tag>_t;`."""

    tag: str
    comment: str
    fields: tuple[Field, ...]

    @property
    def name(self) -> str:
        return f"{self.tag}_t"


@dataclass(frozen=True)
class Enum:
    """A C enum whose members Python names by key: `key` is <prefix><KEY>, valued by its position."""

    tag: str
    prefix: str
    comment: str
    members: tuple[tuple[str, str], ...]  # (key, comment)

    def __getitem__(self, key: str) -> str:
        """The C name of member `key`."""
        if key not in self.values:
            raise KeyError(f"enum {self.tag} has no member '{key}' (members: {', '.join(self.values)})")
        return f"{self.prefix}{key.upper()}"

    @property
    def values(self) -> dict[str, int]:
        return {key: value for value, (key, _) in enumerate(self.members)}


def _type_name(ctype: str | Struct) -> str:
    return ctype.name if isinstance(ctype, Struct) else ctype


def _comment(text: str, indent: str = "") -> str:
    return f"{indent}/* " + f"\n{indent}   ".join(text.split("\n")) + " */"


def declaration(item: Struct | Enum) -> str:
    """The C declaration: an enum with each member's comment above it, or a struct typedef with one member a
    line and its comment beside it."""
    if isinstance(item, Enum):
        members = []
        for value, (key, comment) in enumerate(item.members):
            members += ([_comment(comment, "  ")] if comment else []) + [f"  {item[key]} = {value},"]
        members[-1] = members[-1].rstrip(",")
        return "\n".join([_comment(item.comment), f"enum {item.tag} {{", *members, "};"])
    struct = item
    members = []
    for f in struct.fields:
        ctype = _type_name(f.ctype)
        separator = "" if ctype.endswith("*") else " "
        members.append((f"  {ctype}{separator}{f.name}{f'[{f.count}]' if f.count else ''};", f.comment))
    width = max(len(text) for text, _ in members)
    lines = [f"{text:<{width}} /* {comment} */" if comment else text for text, comment in members]
    return "\n".join([_comment(struct.comment), f"typedef struct {struct.tag} {{", *lines, f"}} {struct.name};"])


def _value(field: Field, value) -> str:
    if isinstance(field.ctype, Struct):
        return _designated(field.ctype, value)
    if field.count:
        if len(value) != field.count:
            raise ValueError(f"{field.name}: {len(value)} values for {field.count} elements")
        return "{" + ", ".join(_scalar(field.ctype, v) for v in value) + "}"
    return _scalar(field.ctype, value)


def _scalar(ctype: str, value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):  # a C expression: a name, an enumerator, an address
        return value
    if ctype == "float":
        return c_float(value)
    return str(operator.index(value))  # an integer (a float here is a mistake, not something to truncate)


def _members(struct: Struct, values: Mapping) -> list[str]:
    unknown = sorted(set(values) - {f.name for f in struct.fields})
    missing = [f.name for f in struct.fields if f.name not in values and f.default is None]
    if unknown or missing:
        raise KeyError(f"{struct.name}: unknown fields {unknown}, missing fields {missing}")
    # Every member in declaration order: C++ (TVM compiles the module with g++) requires the order and
    # warns about members left out.
    return [f".{f.name} = {_value(f, values.get(f.name, f.default))}" for f in struct.fields]


def _designated(struct: Struct, values: Mapping) -> str:
    return "{" + ", ".join(_members(struct, values)) + "}"


def initializer(struct: Struct, values: Mapping) -> str:
    """A designated initializer `{.field = value, ...}` naming every member, wrapped before column
    _LINE_WIDTH. Values: ints, floats (for float members), sequences (arrays), mappings (nested
    structs), None (NULL), or strings taken as C expressions."""
    lines, line = [], ""
    for item in _members(struct, values):
        if line and len(line) + len(item) + 5 > _LINE_WIDTH:
            lines.append(line + ",")
            line = ""
        line = f"{line}, {item}" if line else item
    lines.append(line)
    return "{\n" + "\n".join(f"  {line}" for line in lines) + "\n}"


_CTYPES = {"int32_t": ctypes.c_int32, "uint32_t": ctypes.c_uint32, "float": ctypes.c_float}


@cache
def ctypes_struct(struct: Struct) -> type[ctypes.Structure]:
    """A ctypes.Structure with the struct's layout, for calling the kernels from Python."""

    def member(ctype: str | Struct):
        if isinstance(ctype, Struct):
            return ctypes_struct(ctype)
        if ctype.endswith("*"):
            return ctypes.POINTER(_CTYPES[ctype.removeprefix("const ").rstrip(" *")])
        return _CTYPES[ctype]

    fields = [(f.name, member(f.ctype) * f.count if f.count else member(f.ctype)) for f in struct.fields]
    return type(struct.name, (ctypes.Structure,), {"_fields_": fields})
