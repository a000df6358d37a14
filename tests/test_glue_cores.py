"""TVM's glue on all cluster cores (program/glue_cores.py): which PrimFuncs split by core, and a split network
computes bit-identical outputs to its 1-core build on this host (the cores one after another) and on 8 RV32
harts."""

import subprocess

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import tirx as T

from tvm_deeploy.program.export import export_c
from tvm_deeploy.program.glue import build_glue
from tvm_deeploy.program.glue_cores import split_by_core
from tvm_deeploy.targets.qemu import run_project
from tvm_deeploy.targets.target import target


@T.prim_func(private=True, s_tir=True)
def scale_rows(x: T.Buffer((T.int64(1), T.int64(64)), "float32"), y: T.Buffer((T.int64(1), T.int64(64)), "float32")):
    for i0, i1 in T.grid(T.int64(1), T.int64(64)):
        with T.sblock("y"):
            v0, v1 = T.axis.remap("SS", [i0, i1])
            y[v0, v1] = x[v0, v1] * T.float32(0.5)


@T.prim_func(private=True, s_tir=True)
def sigmoid_times(x: T.Buffer((T.int64(16), T.int64(4)), "float32"), y: T.Buffer((T.int64(16), T.int64(4)), "float32")):
    s = T.sblock_alloc_buffer((T.int64(16), T.int64(4)))
    for i0, i1 in T.grid(T.int64(16), T.int64(4)):
        with T.sblock("s"):
            v0, v1 = T.axis.remap("SS", [i0, i1])
            s[v0, v1] = T.sigmoid(x[v0, v1])
    for i0, i1 in T.grid(T.int64(16), T.int64(4)):
        with T.sblock("y"):
            v0, v1 = T.axis.remap("SS", [i0, i1])
            y[v0, v1] = x[v0, v1] * s[v0, v1]


@T.prim_func(private=True, s_tir=True)
def column_sums(x: T.Buffer((T.int64(64), T.int64(4)), "float32"), y: T.Buffer((T.int64(4),), "float32")):
    for k, j in T.grid(T.int64(64), T.int64(4)):
        with T.sblock("y"):
            vk, vj = T.axis.remap("RS", [k, j])
            with T.init():
                y[vj] = T.float32(0)
            y[vj] = y[vj] + x[vk, vj]


@T.prim_func(private=True, s_tir=True)
def opaque_copy(x: T.Buffer((T.int64(64),), "float32"), y: T.Buffer((T.int64(64),), "float32")):
    with T.sblock("copy_all"):
        T.reads()
        T.writes()
        for i in T.parallel(T.int64(64)):
            y[i] = x[i]


@T.prim_func(private=True, s_tir=True)
def blockless_copy(x: T.Buffer((T.int64(64),), "float32"), y: T.Buffer((T.int64(64),), "float32")):
    for i in range(T.int64(64)):
        y[i] = x[i]


def _source(func, cores=8):
    return build_glue({"f": func}, tvm.target.Target("c"), "t", cores=cores)


def test_an_elementwise_function_splits_over_its_fused_loops():
    glue = _source(scale_rows)
    assert glue.forked == frozenset({"f"}) and glue.cores == 8 and glue.workspace == {"f": 0}
    # the 1 x 64 loops fused: core c runs [64c / 8, 64(c + 1) / 8)
    assert "int64_t core = ((int64_t)dpl_core_id());" in glue.source
    assert "int64_t cse_v1 = (core * (int64_t)8);" in glue.source
    assert "i0_i1_fused < (int64_t)8; ++i0_i1_fused" in glue.source


def test_an_elementwise_producer_is_inlined_then_split():
    assert _source(sigmoid_times).forked == frozenset({"f"})


@pytest.mark.parametrize("func, cores", [
    (column_sums, 8),  # the outer loop is the reduction: cores would add into the same sums
    (column_sums.with_attr("unused", 1), 2),
    (scale_rows, 1),  # one core: nothing to fork
    (sigmoid_times, 33),  # 64 elements: fewer than two per core (a fork costs more)
    (opaque_copy, 8),  # hand-written TIR around TVM's root block (as TVM's cumsum)
    (blockless_copy, 8),  # no block: no access regions to check
])
def test_what_stays_on_one_core(func, cores):
    assert split_by_core(func, cores) is None
    glue = _source(func, cores)
    assert glue.forked == frozenset() and glue.cores == 1 and "dpl_core_id" not in glue.source


DUMP_C = r"""
#include <stdio.h>
#include "net.h"
#include "net_test_vectors.h"
static struct net_outputs outputs;
int main(void) {
  if (net_run(&net_test_inputs, &outputs) != 0) return 2;
  fwrite(&outputs, sizeof outputs, 1, stdout);
  return 0;
}
"""


def _outputs_on_host(project) -> bytes:
    """The network's output struct, byte for byte, built with gcc and the host HAL."""
    (project / "test" / "dump.c").write_text(DUMP_C)
    network = subprocess.run(["make", "-s", "-C", str(project), "-pn"], capture_output=True, text=True).stdout
    sources = next(line for line in network.splitlines() if line.startswith("NETWORK = ")).split()[2:]
    binary = project / "dump"
    subprocess.run(["gcc", "-std=c99", "-O2", "-ffp-contract=off", "-Iinclude", "-Isrc", "-Itest", *sources,
                    "hal/host.c", "test/dump.c", "-o", str(binary), "-lm", "-pthread"], cwd=project, check=True)
    return subprocess.run([str(binary)], capture_output=True, check=True).stdout


def glue_block() -> tvm.IRModule:
    """x -> layer norm (reduces: stays on one core) -> fp32 GEMM -> GELU -> tanh -> x 0.5 (split by core); the
    element-wise families have no kernel for these, and no kernel's result depends on the core count."""
    rng = np.random.default_rng(0)
    weight, gamma, beta = (relax.const(rng.standard_normal(shape).astype("float32")) for shape in ((32, 32), 32, 32))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((16, 32), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            norm = bb.emit(relax.op.nn.layer_norm(x, gamma, beta, axes=[-1]))
            hidden = bb.emit(relax.op.nn.gelu(relax.op.matmul(norm, weight)))
            out = bb.emit_output(relax.op.multiply(relax.op.tanh(hidden), relax.const(0.5, "float32")))
        bb.emit_func_output(out)
    return bb.get()


@pytest.fixture(scope="module")
def glue_projects(tmp_path_factory):
    """glue_block for 1 and for 8 cores."""
    mod = glue_block()
    folder = tmp_path_factory.mktemp("glue_cores")
    return {cores: export_c(mod, target(npu=False, cores=cores), folder / f"cores{cores}", prefix="net")
            for cores in (1, 8)}


def test_split_glue_outputs_are_bit_identical_to_one_core(glue_projects):
    one, eight = glue_projects[1], glue_projects[8]
    glue_cores = [op["cores"] for op in eight.report["ops"] if op["engine"] == "tvm"]
    assert glue_cores.count(8) == 3 and glue_cores.count(1) == 1  # GELU, tanh, scale; the layer norm reduces
    assert all(op["cores"] == 1 for op in one.report["ops"] if op["engine"] == "tvm")
    assert _outputs_on_host(eight.out_dir) == _outputs_on_host(one.out_dir)


@pytest.mark.rv32
def test_split_glue_runs_on_every_hart(glue_projects):
    project = glue_projects[8]
    run = run_project(project.out_dir, harts=8)
    assert (run.exit_code, run.errors) == (0, 0), run.output[-2000:]
    forked = [s for s in run.steps if s.engine == "tvm" and project.report["ops"][s.step - 1]["cores"] == 8]
    assert len(forked) == 3 and all(min(s.instructions) > 0 for s in forked)
    serial = [s for s in run.steps if s.engine == "tvm" and project.report["ops"][s.step - 1]["cores"] == 1]
    assert len(serial) == 1 and all(s.instructions[1:] == (0,) * 7 for s in serial)
