"""Properties of the generated C: strict C99, deterministic, weights stored once, checked calls."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tvm
import tvm_ffi.libinfo
from test_int8 import int_requant_module
from test_patterns import graph
from tvm import relax

import tvm_deeploy
from tvm_deeploy import models
from tvm_deeploy.emit.c import c_float
from tvm_deeploy.emit.codegen import run_codegen
from tvm_deeploy.emit.ops import emit_module
from tvm_deeploy.offload.functions import offloaded_functions
from tvm_deeploy.plan.offloads import planned_functions

STRICT = ["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-c"]


def every_op_kind():
    """Planned functions of fp32 GEMM, attention (op and chain), softmax and both int8 GEMM forms."""
    block = models.transformer_block()
    int8 = models.int8_mlp()
    rng = np.random.default_rng(3)
    requant = int_requant_module((4, 8), rng.integers(-128, 128, (8, 6)).astype("int8"),
                                 np.arange(6, dtype="int32"), np.int32(77), None, np.int32(5), 1, -128, 127)
    functions = []
    for mod in (block, int8, requant):
        functions += planned_functions(tvm_deeploy.plan_offloads(tvm_deeploy.partition_for_deeploy(mod), "deeploy"))
    return sorted(functions, key=lambda fn: fn.symbol)


def generate(ffi_wrappers=True) -> str:
    return emit_module(every_op_kind(), ffi_wrappers=ffi_wrappers)


def test_mcu_part_is_strict_c99(tmp_path):
    source = tmp_path / "net.c"
    source.write_text(generate(ffi_wrappers=False))
    assert "tvm/ffi" not in source.read_text()
    subprocess.run(STRICT + [str(source), "-o", str(tmp_path / "net.o")], check=True)


def test_module_with_vm_wrappers_is_strict_c99_and_cxx(tmp_path):
    source = tmp_path / "host.c"
    source.write_text(generate())
    include = ["-I", tvm_ffi.libinfo.find_include_path()]
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-c"] + include
                   + [str(source), "-o", str(tmp_path / "host.o")], check=True)
    subprocess.run(["g++", "-x", "c++", "-Wall", "-Wextra", "-Werror", "-O2", "-c"] + include
                   + [str(source), "-o", str(tmp_path / "host_cxx.o")], check=True)


def test_generation_is_byte_identical_across_processes():
    script = ("import sys; sys.path.insert(0, 'tests'); from test_codegen import generate; "
              "sys.stdout.write(generate())")
    outputs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outputs.append(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                                      text=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__))).stdout)
    assert outputs[0] == outputs[1]
    assert outputs[0] == generate()


def test_float_literals_are_exact():
    for value in (0.1, -3.25, 1e-30, 3.4e38, np.float32(1) / 3):
        literal = c_float(value)
        assert np.float32(float.fromhex(literal.rstrip("f"))) == np.float32(value)
    assert c_float(float("inf")) == "INFINITY" and c_float(float("-inf")) == "-INFINITY"
    assert c_float(float("nan")) == "NAN"


def test_weights_are_stored_once(tmp_path):
    weight = np.random.default_rng(0).standard_normal((512, 512)).astype("float32")  # 1 MiB
    mod = graph([((4, 512), "float32")], lambda bb, x: relax.op.matmul(x, relax.const(weight)))
    lowered, functions = run_codegen(tvm_deeploy.plan_offloads(tvm_deeploy.partition_for_deeploy(mod), "deeploy"))
    assert [fn.spec.kind for fn in functions] == ["gemm"]
    assert len(lowered.attrs["const_name_to_constant"]) == 0
    path = tmp_path / "lib.so"
    tvm.relax.build(mod, target="deeploy").export_library(str(path))
    # One copy of the 1 MiB weight (plus code), not two.
    assert weight.nbytes < path.stat().st_size < 1.5 * weight.nbytes


def test_wrapper_rejects_wrong_tensors(tmp_path):
    mod = graph([((4, 8), "float32"), ((8, 5), "float32")], lambda bb, x, y: relax.op.matmul(x, y))
    path = tmp_path / "lib.so"
    tvm.relax.build(mod, target="deeploy").export_library(str(path))
    lib = tvm.runtime.load_module(str(path))
    (symbol,) = [f.attrs["global_symbol"] for _, f in offloaded_functions(tvm_deeploy.partition_for_deeploy(mod))]
    kernel = lib.get_function(str(symbol), query_imports=True)
    x, y, out = (tvm.runtime.tensor(np.zeros(s, "float32")) for s in ((4, 8), (8, 5), (4, 5)))
    kernel(x, y, out)  # the right tensors work
    with pytest.raises(ValueError, match="argument 1: a dimension of the shape is 6, compiled for 5"):
        kernel(x, tvm.runtime.tensor(np.zeros((8, 6), "float32")), out)
    with pytest.raises(ValueError, match="argument 0: dtype"):
        kernel(tvm.runtime.tensor(np.zeros((4, 8), "int32")), y, out)
    with pytest.raises(ValueError, match="argument 2: rank is 1, compiled for 2"):
        kernel(x, y, tvm.runtime.tensor(np.zeros(20, "float32")))
    with pytest.raises(TypeError, match="the number of arguments is 2, compiled for 3"):
        kernel(x, y)
