"""`export_c`: standalone C projects built with gcc (no TVM runtime) and run against TVM's VM and llvm.

Each project's own driver compares its outputs with the VM run of `relax.build(mod, target)` of the same
module (bit-exact for integer outputs, fp32 within 1e-6 relative) and prints the largest difference from
TVM's llvm build, which must stay within the package's numerics policy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from test_int8 import int_requant_module
from tvm import relax, tirx

import tvm_deeploy
from tvm_deeploy import models
from tvm_deeploy.program.lower import UnsupportedModelError
from tvm_deeploy.program.placement import ArenaTooSmallError

REPO = Path(__file__).resolve().parent.parent
QDQ_LSB = 0.05  # output scale of the last QDQ layer of the float-output test models



def int_requant_gemm():
    rng = np.random.default_rng(7)
    return int_requant_module((16, 48), rng.integers(-128, 128, (48, 20)).astype("int8"),
                              rng.integers(-2000, 2000, 20).astype("int32"), rng.integers(1, 100, 20).astype("int32"),
                              np.int32(1000), np.int32(12), -3, -128, 127)


# name -> (builder, tolerance against TVM's llvm build: ("rel", r) of max |llvm| or ("abs", a))
MODELS = {
    "mlp_fp32": (lambda: models.mlp(), ("rel", 1e-5)),
    "mlp_int8_qdq": (lambda: models.mlp(quantized=True), ("abs", 2 * QDQ_LSB)),
    "mlp_int8_io": (lambda: models.int8_mlp(), ("abs", 2)),  # int8 in and out: 1 LSB per layer
    "gemm_int_requant": (int_requant_gemm, ("abs", 0)),  # integer graph: bit-exact
    "attention_fp32": (lambda: models.attention_block(), ("rel", 1e-5)),
    "attention_int8_qdq": (lambda: models.attention_block(quantized=True), ("abs", 2 * QDQ_LSB)),
    "transformer_fp32": (lambda: models.llama_block(), ("rel", 1e-5)),
    "transformer_int8_qdq": (lambda: models.llama_block(quantized=True), ("abs", 2 * QDQ_LSB)),
}


def make(project: Path, target: str = "host", opt: str = "-O1") -> Path:
    subprocess.run(["make", "-s", "-C", str(project), target, f"OPT={opt}"], check=True)
    prefix = json.loads((project / "report.json").read_text())["prefix"]
    return project / "build" / target / f"{prefix}_test"


def run_driver(program: Path) -> tuple[int, str]:
    result = subprocess.run([str(program)], capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


def parse(output: str) -> tuple[int, int, float]:
    errors = re.search(r"^Errors: (\d+) out of (\d+)$", output, re.MULTILINE)
    llvm = re.search(r"^Largest difference from TVM llvm: (\S+)", output, re.MULTILINE)
    assert errors and llvm, output
    return int(errors.group(1)), int(errors.group(2)), float(llvm.group(1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, offload) -> (Exported, driver exit code, driver output), each exported and run once."""
    cache = {}

    def get(name: str, offload: bool):
        if (name, offload) not in cache:
            folder = tmp_path_factory.mktemp(f"{name}_{'offload' if offload else 'tvm'}")
            result = tvm_deeploy.export_c(MODELS[name][0](), tvm_deeploy.target(), folder / "project",
                                          prefix="net", offload=offload)
            code, output = run_driver(make(folder / "project"))
            cache[name, offload] = (result, code, output)
        return cache[name, offload]

    return get


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "tvm_alone"])
@pytest.mark.parametrize("name", list(MODELS))
def test_program_matches_vm_and_llvm(name, offload, exported):
    result, code, output = exported(name, offload)
    errors, total, llvm_diff = parse(output)
    assert code == 0 and errors == 0 and total > 0, output
    report = result.report
    kinds = {op["kind"] for op in report["ops"]}
    assert ("deeploy" in kinds) == offload
    # Within the numerics policy of TVM's llvm build.
    kind, tolerance = MODELS[name][1]
    if kind == "rel":
        llvm_max = float(re.search(r"\((\S+) of the largest", output).group(1)) if llvm_diff else 0.0
        assert llvm_max <= tolerance, output
    else:
        assert llvm_diff <= tolerance * (1 + 1e-6), output  # the driver prints float32 differences


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "tvm_alone"])
@pytest.mark.parametrize("name", list(MODELS))
def test_arena_is_close_to_the_lower_bound(name, offload, exported):
    report = exported(name, offload)[0].report
    memory = report["memory"]["L2"]
    assert memory["lower_bound_bytes"] <= memory["arena_bytes"] <= 1.05 * memory["lower_bound_bytes"]
    # TVM's own plan of the same module needs at least as much (its storages plus the largest workspace).
    assert memory["arena_bytes"] <= memory["tvm_static_plan_block_memory_plus_workspace_bytes"]
    assert memory["capacity_bytes"] == 2 * 1024 * 1024
    assert report["solver"]["L2"]["method"] in ("greedy", "cp-sat")
    header = (exported(name, offload)[0].out_dir / "include" / "net.h").read_text()
    assert f"#define NET_ARENA_L2_BYTES {memory['arena_bytes']}\n" in header


def test_report_lists_ops_memory_and_weights(exported):
    result = exported("transformer_int8_qdq", True)[0]
    report = result.report
    assert report == json.loads((result.out_dir / "report.json").read_text())
    engines = [op["engine"] for op in report["ops"]]
    # 7 linear layers on the NPU; attention, 2 norms (quantizing their outputs), SwiGLU, 2 residual adds on
    # the cluster
    assert engines.count("npu") == 7 and engines.count("cluster") == 6 and "tvm" not in engines
    gemm = next(op for op in report["ops"] if op["engine"] == "npu")
    assert gemm["op"].startswith("gemm int8->int8") and gemm["plan"]["tiles"] >= 1
    assert gemm["plan"]["modelled_cycles"]["npu"] < gemm["plan"]["modelled_cycles"]["cluster"]
    assert report["weights"]["section"] == ".dpl_weights" and report["weights"]["bytes"] > 0
    assert 0 < report["weights"]["npu_bytes"] == report["memory"]["weights"]["arena_bytes"] < report["weights"]["bytes"]
    assert set(report["memory"]["L2"]) >= {"arena_bytes", "lower_bound_bytes", "tvm_static_plan_block_memory_bytes"}


def test_project_is_standalone_c(exported):
    result, _, _ = exported("transformer_fp32", True)
    project = result.out_dir
    program = project / "build" / "host" / "net_test"
    # Only the project's own headers and the C standard library.
    standard = set("assert complex ctype errno fenv float inttypes iso646 limits locale math setjmp signal stdarg "
                   "stdbool stddef stdint stdio stdlib string tgmath time wchar wctype".split())
    for path in list(project.glob("src/*")) + list(project.glob("include/*")) + list(project.glob("test/*")):
        for system, local in re.findall(r'^#include (?:<([^>]+)>|"([^"]+)")', path.read_text(), re.MULTILINE):
            if system:
                assert system.removesuffix(".h") in standard, (path, system)
            else:
                assert any((project / folder / local).exists() for folder in ("src", "include", "test")), local
    # The network needs nothing but memcpy/memset, libm and the HAL the platform supplies (the cluster's
    # DMA and cores, declared in dpl_hal.h): no I/O, no allocation (only the driver prints).
    hal_api = set(re.findall(r"^\w[\w ]*\b(dpl_\w+)\(", (project / "include" / "dpl_hal.h").read_text(), re.MULTILINE))
    defined, undefined = set(), set()
    for source in project.glob("src/*.c"):
        obj = project / "build" / (source.stem + ".o")
        subprocess.run(["gcc", "-std=c99", "-O1", "-c", "-I", str(project / "include"), "-I", str(project / "src"),
                        str(source), "-o", str(obj)], check=True)
        symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout.split("\n")
        for line in filter(None, symbols):
            kind, name = line.split()[-2:]
            (undefined if kind == "U" else defined).add(name)
    libm = re.compile(r"^(exp|expf|log|logf|sqrt|sqrtf|pow|powf|tanh|tanhf|erf|erff|fabsf?|floorf?|ceilf?|roundf?|"
                      r"nearbyintf?|fmaxf?|fminf?|fmodf?)$")
    needed = undefined - defined - {"_GLOBAL_OFFSET_TABLE_"}
    assert all(name in ("memcpy", "memset") or libm.match(name) or name in hal_api for name in needed), needed
    assert {"dpl_dma_start_2d", "dpl_cluster_fork"} <= hal_api
    linked = subprocess.run(["ldd", str(program)], capture_output=True, text=True).stdout
    assert "tvm" not in linked
    # Weights sit in their own section, at least as large as the reported weight bytes.
    sections = subprocess.run(["objdump", "-h", str(program)], capture_output=True, text=True).stdout
    match = re.search(r"\.dpl_weights\s+([0-9a-f]+)", sections)
    assert match and int(match.group(1), 16) >= result.report["weights"]["bytes"]


def test_no_offload_is_tvm_alone(exported):
    result = exported("transformer_fp32", False)[0]
    assert not (result.out_dir / "src" / "net_ops.c").exists()
    assert "net_ops.c" not in (result.out_dir / "Makefile").read_text()
    assert {op["engine"] for op in result.report["ops"]} == {"tvm"}


def test_sanitizers_with_tvm_checks_and_io_in_arena(tmp_path):
    """TVM's own argument checks validate the network's tensor descriptors; ASan and UBSan the rest."""
    result = tvm_deeploy.export_c(models.llama_block(quantized=True), tvm_deeploy.target(), tmp_path / "p",
                                  prefix="blk", checks=True, io_in_arena=True)
    code, output = run_driver(make(tmp_path / "p", "host-asan"))
    assert code == 0 and parse(output)[0] == 0, output
    memory = result.report["memory"]["L2"]
    assert memory["arena_bytes"] <= 1.05 * memory["lower_bound_bytes"]
    assert "const float *blk_output_y(void);" in (tmp_path / "p" / "include" / "blk.h").read_text()


@pytest.mark.parametrize("engine", ["cluster", "npu"])
def test_tightly_tiled_project_under_sanitizers(engine, tmp_path):
    """At L1 = 1 KiB every GEMM runs in many tiles (DMA through the host HAL; on the cluster 8 threads,
    on the NPU its functional model): the program still equals the VM run of the same build, under
    ASan and UBSan."""
    target = tvm_deeploy.target(l1_bytes=1024, npu=engine == "npu")
    result = tvm_deeploy.export_c(models.llama_block(quantized=True), target, tmp_path / "p")
    tilings = [op["plan"] for op in result.report["ops"] if op["engine"] == engine and op["plan"]["tiling"]]
    # NPU tiles need no L1 for the weights (resident in the weight memory), so they are larger.
    most_tiles = max(t["tiles"] for t in tilings)
    assert tilings and all(t["l1_bytes"] <= 1024 for t in tilings) and most_tiles > (8 if engine == "cluster" else 2)
    assert result.report["memory"]["L1"]["arena_bytes"] >= max(t["l1_bytes"] for t in tilings)
    code, output = run_driver(make(tmp_path / "p", "host-asan"))
    assert code == 0 and parse(output)[0] == 0, output


def test_io_in_arena_accessors(tmp_path):
    """With inputs and outputs in the arena, a caller can write and read them in place and pass NULL."""
    tvm_deeploy.export_c(models.mlp(), tvm_deeploy.target(), tmp_path / "p", io_in_arena=True)
    driver = tmp_path / "p" / "test" / "in_place.c"
    driver.write_text("""\
#include <stdio.h>
#include <string.h>
#include "net.h"
#include "net_test_vectors.h"
int main(void)
{
  long i, wrong = 0;
  const float *y;
  memcpy(net_input_x(), net_test_inputs.x, NET_INPUT_X_BYTES);
  if (net_run(NULL, NULL) != 0) return 2;
  y = net_output_y();
  for (i = 0; i < NET_OUTPUT_Y_ELEMENTS; ++i) wrong += y[i] != net_expected_y[i];
  printf("wrong %ld\\n", wrong);
  return wrong != 0;
}
""")
    sources = sorted(str(path) for path in (tmp_path / "p" / "src").glob("*.c")) + [str(driver)]
    sources.append(str(tmp_path / "p" / "hal" / "host.c"))
    binary = tmp_path / "in_place"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-I", str(tmp_path / "p" / "include"),
                    "-I", str(tmp_path / "p" / "src"), "-I", str(tmp_path / "p" / "test")] + sources
                   + ["-o", str(binary), "-lm", "-pthread"], check=True)
    code, output = run_driver(binary)
    assert code == 0 and "wrong 0" in output


def test_outputs_that_are_inputs_constants_or_repeated(tmp_path):
    """Returned inputs, constants and repeated values get copies; views (reshape) cost no copy."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 6), "float32"))
    n = relax.Var("n", relax.TensorType((3,), "int32"))
    with bb.function("main", [x, n]):
        with bb.dataflow():
            r = bb.emit(relax.op.nn.relu(x))
            view = bb.emit(relax.op.reshape(r, (6, 4)))
            doubled = bb.emit(relax.op.add(n, n))
            out = bb.emit_output(relax.Tuple([view, x, relax.const(np.arange(5, dtype="int32")), r, doubled]))
        bb.emit_func_output(out)
    result = tvm_deeploy.export_c(bb.get(), tvm_deeploy.target(), tmp_path / "p", prefix="edge")
    assert result.report["counts"]["copies"] == 3  # x, the constant, and r (already returned as a view)
    code, output = run_driver(make(tmp_path / "p"))
    assert code == 0 and parse(output)[:2] == (0, 24 + 24 + 5 + 24 + 3), output
    header = (tmp_path / "p" / "include" / "edge.h").read_text()
    assert "int32_t y2[5];" in header and "int32_t n[3];" in header and "#define EDGE_NUM_OUTPUTS 5" in header


def test_non_finite_weights_and_outputs(tmp_path):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((3, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.add(x, relax.const(np.array([-np.inf, np.inf, np.nan, 1], "float32"))))
        bb.emit_func_output(out)
    tvm_deeploy.export_c(bb.get(), tvm_deeploy.target(), tmp_path / "p")
    code, output = run_driver(make(tmp_path / "p"))
    assert code == 0 and parse(output) == (0, 12, 0.0), output


def test_offloaded_only_program_with_a_constant_output(tmp_path):
    weight = np.random.default_rng(0).standard_normal((8, 5)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(weight)))
            out = bb.emit_output(relax.Tuple([y, relax.const(weight[:2])]))
        bb.emit_func_output(out)
    result = tvm_deeploy.export_c(bb.get(), tvm_deeploy.target(), tmp_path / "p")
    assert "src/net_glue.c" not in result.files and "src/net_weights.c" in result.files
    assert [op["kind"] for op in result.report["ops"]] == ["deeploy", "copy"]
    code, output = run_driver(make(tmp_path / "p"))
    assert code == 0 and parse(output)[:2] == (0, 20 + 10), output


def test_exporting_twice_gives_identical_files(tmp_path):
    script = ("import sys, tvm_deeploy; from tvm_deeploy import models; "
              "tvm_deeploy.export_c(models.attention_block(quantized=True), tvm_deeploy.target(), sys.argv[1])")
    trees = []
    for seed, folder in (("1", tmp_path / "a"), ("2", tmp_path / "b")):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(REPO))
        subprocess.run([sys.executable, "-c", script, str(folder)], check=True, env=env, cwd=REPO)
        trees.append({p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()})
    assert trees[0] == trees[1]
    assert Path("report.json") in trees[0] and Path("src/net_ops.c") in trees[0]
    for content in trees[0].values():
        assert str(tmp_path).encode() not in content


def test_activations_that_do_not_fit_l2(tmp_path):
    with pytest.raises(ArenaTooSmallError) as err:
        tvm_deeploy.export_c(models.llama_block(), tvm_deeploy.target(l2_bytes=8192), tmp_path / "p")
    message = str(err.value)
    assert "do not fit L2" in message and "need 14336 bytes" in message and "8192 bytes are available" in message
    assert (err.value.level, err.value.needed, err.value.available) == ("L2", 14336, 8192)
    assert not (tmp_path / "p").exists()


def test_dynamic_shapes_are_refused(tmp_path):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((tirx.Var("n", "int64"), 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.relu(x))
        bb.emit_func_output(out)
    with pytest.raises(UnsupportedModelError, match=r"dynamic shapes .* input 'x' has shape \(n, 8\)"):
        tvm_deeploy.export_c(bb.get(), None, tmp_path / "p")


def test_control_flow_is_refused(tmp_path):
    from tvm.script import relax as R

    @tvm.script.ir_module
    class Branchy:
        @R.function
        def main(x: R.Tensor((4,), "float32"), c: R.Tensor((), "bool")) -> R.Tensor((4,), "float32"):
            if c:
                y = R.add(x, x)
            else:
                y = R.multiply(x, x)
            return y

    with pytest.raises(UnsupportedModelError, match=r"control flow \(if/else\)"):
        tvm_deeploy.export_c(Branchy, None, tmp_path / "p")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="prefix"):
        tvm_deeploy.export_c(models.mlp(), None, tmp_path / "p", prefix="9net")
    with pytest.raises(ValueError, match="deeploy target"):
        tvm_deeploy.export_c(models.mlp(), tvm.target.Target("llvm"), tmp_path / "p")
    with pytest.raises(ValueError, match="test input"):
        tvm_deeploy.export_c(models.mlp(), None, tmp_path / "p", inputs=[np.zeros((2, 2), "float32")])
