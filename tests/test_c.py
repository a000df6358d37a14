"""The C renderer (tvm_deeploy/emit/c.py) and the kernel argument structs described in emit/kernel_args.py."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from conftest import KERNEL_DIR, run_c_program

from tvm_deeploy.emit.c import (
    C_TYPES,
    Enum,
    Field,
    Struct,
    array_bytes,
    c_array,
    c_double,
    c_float,
    c_int,
    c_items,
    c_shape,
    ctypes_struct,
    declaration,
    fill,
    initializer,
)
from tvm_deeploy.emit.kernel_args import HEADER, REQUANT, STRUCTS, header_source
from tvm_deeploy.program.lower import DTYPES


def test_float_literals():
    assert [c_float(v) for v in (3.0, 0.1, -0.0, 0.0, 1.0)] == ["0x1.8p+1f", "0x1.99999ap-4f", "-0x0p+0f", "0x0p+0f",
                                                               "0x1p+0f"]
    assert [c_float(v) for v in (np.inf, -np.inf, np.nan)] == ["INFINITY", "-INFINITY", "NAN"]
    assert c_float(1e-45) == "0x1p-149f"  # the smallest float32 subnormal
    assert c_double(0.1) == "0x1.999999999999ap-4"


def test_float_literals_round_trip():
    values = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * np.float32(1e30)
    assert all(np.float32(float.fromhex(c_float(v)[:-1])) == v for v in values)


def test_int_literals():
    assert [c_int(-(2**31)), c_int(-(2**63), "int64"), c_int(7, "int64"), c_int(2**64 - 1, "uint64"),
            c_int(5, "uint32"), c_int(-3, "int8")] == [
        "(-2147483647 - 1)", "(-9223372036854775807LL - 1)", "7LL", "18446744073709551615ULL", "5U", "-3"]


def test_every_program_dtype_has_a_c_type():
    assert set(C_TYPES) == set(DTYPES)


def test_arrays():
    assert c_items(np.arange(18, dtype=np.int8), "int8") == (
        "  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,\n  16, 17,")
    assert c_items(np.zeros(0, np.int32), "int32") == "0"
    assert c_array("w", np.array([[1.5, -2]], np.float32), "float32", attributes="DPL_WEIGHTS") == (
        "static const float w[2] DPL_WEIGHTS = {\n  0x1.8p+0f, -0x1p+1f,\n};")
    assert c_array("t", np.array([1, 2]), "uint16", storage="const") == "const uint16_t t[2] = {\n  1, 2,\n};"


def test_array_bytes_sums_each_placement():
    text = "\n".join([c_array("a", np.zeros(3, np.float32), "float32", attributes="DPL_WEIGHTS"),
                      c_array("b", np.zeros(5, np.int8), "int8", attributes="DPL_NPU_WEIGHTS"),
                      c_array("c", np.zeros(2, np.uint16), "uint16", attributes="DPL_WEIGHTS"),
                      c_array("d", np.zeros(7, np.int32), "int32")])  # no placement: not counted
    assert array_bytes(text) == {"DPL_WEIGHTS": 16, "DPL_NPU_WEIGHTS": 5}


def test_shapes():
    assert (c_shape((2, 3)), c_shape(())) == ("{2, 3}", "{1}")


def test_fill_wants_exactly_the_template_fields():
    assert fill("int ${name} = $value;", name="x", value=3) == "int x = 3;"
    with pytest.raises(KeyError, match=r"missing \['value'\], unknown \[\]"):
        fill("int ${name} = $value;", name="x")
    with pytest.raises(KeyError, match=r"missing \[\], unknown \['extra'\]"):
        fill("int $name;", name="x", extra=1)


POINT = Struct("pt", "A point.", (Field("x", "int32_t", "across"), Field("y", "float"),
                                  Field("p", "const int32_t *")))
BOX = Struct("box", "Two points.", (Field("lo", POINT), Field("hi", POINT), Field("sizes", "uint32_t", count=2),
                                    Field("flags", "int32_t", default=0)))


def test_declaration():
    assert declaration(POINT) == ("/* A point. */\ntypedef struct pt {\n  int32_t x;        /* across */\n"
                                  "  float y;\n  const int32_t *p;\n} pt_t;")


def test_designated_initializer_names_every_member_in_order():
    point = {"x": -1, "y": 0.5, "p": None}
    assert initializer(BOX, {"sizes": (2, 3), "hi": point, "lo": dict(point, p="data")}) == (
        "{\n  .lo = {.x = -1, .y = 0x1p-1f, .p = data}, .hi = {.x = -1, .y = 0x1p-1f, .p = NULL}, .sizes = {2, 3},\n"
        "  .flags = 0\n}")
    with pytest.raises(KeyError, match=r"pt_t: unknown fields \['z'\], missing fields \['y', 'p'\]"):
        initializer(POINT, {"x": 1, "z": 2})
    with pytest.raises(TypeError):  # a float for an integer member is not truncated
        initializer(POINT, {"x": 1.5, "y": 0, "p": None})
    with pytest.raises(ValueError, match="sizes: 1 values for 2 elements"):
        initializer(BOX, {"lo": point, "hi": point, "sizes": (1,)})


def test_enum():
    mode = Enum("mode", "M_", "Modes.", (("off", ""), ("fast_on", "two\nlines")))
    assert (mode["fast_on"], mode.values) == ("M_FAST_ON", {"off": 0, "fast_on": 1})
    assert declaration(mode) == "/* Modes. */\nenum mode {\n  M_OFF = 0,\n  /* two\n     lines */\n  M_FAST_ON = 1\n};"
    with pytest.raises(KeyError, match="enum mode has no member 'on' \\(members: off, fast_on\\)"):
        mode["on"]


def test_committed_header_is_generated():
    """c_kernels/dpl_kernel_args.h is what kernel_args.py describes."""
    assert (KERNEL_DIR / HEADER).read_text() == header_source(), "regenerate it with kernel_args.write_header()"


def test_ctypes_mirrors_match_the_c_layout(tmp_path):
    """sizeof and every member's offsetof, as the C compiler lays the structs out, against the ctypes classes."""
    lines = [f'  printf("%u\\n", (unsigned)sizeof({s.name}));\n'
             + "".join(f'  printf("%u\\n", (unsigned)offsetof({s.name}, {f.name}));\n' for f in s.fields)
             for s in STRUCTS]
    source = ("#include <stddef.h>\n#include <stdio.h>\n#include \"dpl_kernel_args.h\"\nint main(void)\n{\n"
              + "".join(lines) + "  return 0;\n}\n")
    got = [int(x) for x in run_c_program(tmp_path, "layout", source, "-I", KERNEL_DIR).split()]
    want = []
    for struct in STRUCTS:
        mirror = ctypes_struct(struct)
        want += [ctypes.sizeof(mirror)] + [getattr(mirror, f.name).offset for f in struct.fields]
    assert got == want


def test_ctypes_mirror_types():
    requant = ctypes_struct(REQUANT)
    assert requant is ctypes_struct(REQUANT)  # one class, so pointers to it match across tests
    assert requant._fields_[:2] == [("mode", ctypes.c_int32), ("bias", ctypes.POINTER(ctypes.c_int32))]
