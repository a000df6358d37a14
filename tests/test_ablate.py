"""`tvm-deeploy ablate`: the grid file, skipped points, speedups and the summary, and (rv32) a grid of a
small int8 QDQ MLP × {tvm, cluster} × cores {1, 8} × {gcc, clang} under qemu: every point Errors: 0, a
rerun from the cache, the same counts on a Dask LocalCluster, the outputs and plots."""

from __future__ import annotations

import itertools
import json
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_deeploy.ablate import GridError, Point, run_grid
from tvm_deeploy.ablate.execute import point_key, run_points
from tvm_deeploy.ablate.grid import load_grid, parse_grid
from tvm_deeploy.ablate.outputs import add_speedups, summary
from tvm_deeploy.ablate.point import run_point
from tvm_deeploy.cli import main

GRID = """[grid]
model = ["mlp.onnx"]
build = ["tvm", "cluster"]
cores = [1, 8]
compiler = ["gcc", "clang"]
"""


def qdq_mlp_onnx(path, tokens=8, dims=(32, 64, 16), seed=0):
    """An int8 QDQ MLP (per-channel weights, ReLU between the layers) written as ONNX."""
    rng = np.random.default_rng(seed)
    initializers = [numpy_helper.from_array(np.float32(0.02), "x_scale"), numpy_helper.from_array(np.int8(0), "zp")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "x_scale", "zp"], ["a0"])]
    for layer, (k, n) in enumerate(itertools.pairwise(dims)):
        names = {name: f"{name}{layer}" for name in ("w", "w_scale", "w_zp", "y_scale", "wf", "y", "q", "r", "a")}
        initializers += [numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), names["w"]),
                         numpy_helper.from_array(rng.uniform(0.002, 0.01, n).astype(np.float32), names["w_scale"]),
                         numpy_helper.from_array(np.zeros(n, np.int8), names["w_zp"]),
                         numpy_helper.from_array(np.float32(0.05 * (layer + 1)), names["y_scale"])]
        nodes += [helper.make_node("DequantizeLinear", [names["w"], names["w_scale"], names["w_zp"]], [names["wf"]],
                                   axis=1),
                  helper.make_node("MatMul", [f"a{layer}", names["wf"]], [names["y"]])]
        last = layer == len(dims) - 2
        activated = names["y"] if last else names["r"]
        if not last:
            nodes.append(helper.make_node("Relu", [names["y"]], [names["r"]]))
        nodes.append(helper.make_node("QuantizeLinear", [activated, names["y_scale"], "zp"],
                                      ["out" if last else names["q"]]))
        if not last:
            nodes.append(helper.make_node("DequantizeLinear", [names["q"], names["y_scale"], "zp"], [f"a{layer + 1}"]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.INT8, [tokens, dims[0]])]
    outputs = [helper.make_tensor_value_info("out", TensorProto.INT8, [tokens, dims[-1]])]
    graph = helper.make_graph(nodes, "qdq_mlp", inputs, outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ablate")
    qdq_mlp_onnx(folder / "mlp.onnx")
    (folder / "grid.toml").write_text(GRID)
    return folder / "grid.toml"


def test_grid_spans_every_combination_with_defaults(grid_file):
    points = load_grid(grid_file)
    assert len(points) == 8
    assert points[0] == Point(str(grid_file.parent / "mlp.onnx"), "siracusa", "tvm", 1, 256, 2048, "cpsat", "cpsat",
                              True, "gcc", "-O2", "qemu")
    assert [(p.build, p.cores, p.compiler) for p in points[-2:]] == [("cluster", 8, "gcc"), ("cluster", 8, "clang")]
    generic = parse_grid('[grid]\nmodel = ["lm:stories260K"]\nplatform = ["generic"]', grid_file.parent)
    assert [(p.cores, p.l1_kib, p.l2_kib) for p in generic] == [(1, 64, 512)]


@pytest.mark.parametrize("text, message", [
    ("[grid]\nbuild = ['tvm']", "[grid] lists no model"),
    ("[grid]\nmodel = ['mlp.onnx']\nspeed = [1]", "[grid] unknown axis speed"),
    ("[grid]\nmodel = ['mlp.onnx']\ncompiler = ['icc']", "[grid] compiler: 'icc' is not one of gcc, clang"),
    ("[grid]\nmodel = ['mlp.onnx']\ncores = [0]", "[grid] cores: 0 is not a positive integer"),
    ("[grid]\nmodel = ['lm:gpt2']", "[grid] model: 'lm:gpt2' is not one of lm:stories260K, lm:microLlama"),
    ("[grid]\nmodel = ['missing.onnx']", "[grid] model: missing.onnx not found"),
    ("model = 1", "no [grid] table"),
])
def test_grid_errors(grid_file, text, message):
    with pytest.raises(GridError) as raised:
        parse_grid(text, grid_file.parent)
    assert str(raised.value).startswith(message)


def test_impossible_points_are_skipped_with_the_reason(grid_file, tmp_path):
    text = "[grid]\nmodel = ['mlp.onnx']\nbuild = ['npu']\nrun = ['qemu', 'host']\nplatform = ['siracusa', 'generic']"
    reasons = [p.skip_reason() for p in parse_grid(text, grid_file.parent)]
    assert reasons == ["qemu cannot count the NPU (run npu builds on host)", None, "platform generic has no NPU",
                       "platform generic has no NPU"]
    row = run_point(parse_grid(text, grid_file.parent)[2], tmp_path)
    assert (row["status"], row["reason"]) == ("skipped", "platform generic has no NPU")


def test_the_tiler_planner_and_lanes_switches_reach_the_build(grid_file, tmp_path):
    """A greedy-tiled, TVM-planned point builds, runs correctly and says which tiler it ran; with lanes off its
    int8 weights are stored as int8, fewer bytes than packed in lane words."""
    text = "[grid]\nmodel = ['mlp.onnx']\ntiler = ['greedy']\nplanner = ['tvm']\nrun = ['host']\nlanes = [true, false]"
    packed, plain = (run_point(point, tmp_path / str(point.lanes)) for point in parse_grid(text, grid_file.parent))
    for row in (packed, plain):
        assert (row["status"], row["tiler"], row["planner"]) == ("ok", "greedy", "tvm")
        assert "greedy" in row["solver_status"].split("/") and "optimal" not in row["solver_status"]
    assert (packed["lanes"], plain["lanes"]) == (True, False)
    assert packed["weight_bytes"] > plain["weight_bytes"]


def _row(build, cores, instructions, status="ok"):
    return {"model": "m.onnx", "platform": "siracusa", "build": build, "cores": cores, "l1_kib": 256, "l2_kib": 2048,
            "tiler": "cpsat", "planner": "cpsat", "lanes": True, "compiler": "gcc", "opt": "-O2", "run": "qemu",
            "status": status, "reason": "", "instructions": instructions}


def test_speedup_over_tvm_alone_and_summary():
    rows = [_row("tvm", 1, 1000), _row("tvm", 8, 990), _row("cluster", 1, 400), _row("cluster", 8, 110),
            _row("npu", 8, None, status="failed")]
    add_speedups(rows)
    assert [r["speedup_over_tvm"] for r in rows] == [0.99, 1.0, 2.475, 9.0, None]
    table = summary(rows).splitlines()
    assert table[2] == "5 points: 4 ok, 1 failed, 0 skipped"
    assert table[6:8] == ["| build | cores | instructions | speedup_over_tvm | status |", "|---|---|---|---|---|"]
    assert table[11] == "| cluster | 8 | 110 | 9 | ok |"


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "grid.toml").write_text("[grid]\nmodel = ['lm:gpt2']\n")
    assert main(["ablate", str(tmp_path / "grid.toml"), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("tvm-deeploy ablate: error: [grid] model: 'lm:gpt2' is not one of "
                                       "lm:stories260K, lm:microLlama\n")
    assert main(["ablate", str(tmp_path / "grid.toml"), "-o", str(tmp_path / "out"), "--jobs", "0"]) == 2
    assert capsys.readouterr().err == "tvm-deeploy ablate: error: --jobs must be at least 1, got 0\n"


@pytest.mark.rv32
def test_grid_under_qemu_cached_and_on_a_dask_cluster(grid_file, tmp_path, capsys, monkeypatch):
    distributed = pytest.importorskip("dask.distributed")
    out = tmp_path / "out"
    assert main(["ablate", str(grid_file), "-o", str(out), "--jobs", "2"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["status"], r["errors"], r["cached"]) for r in rows] == [("ok", 0, False)] * 8
    assert all(r["kernel_instructions"] == 0 for r in rows if r["build"] == "tvm")
    kernel = {(r["cores"], r["compiler"]): r["kernel_instructions"] for r in rows if r["build"] == "cluster"}
    assert all(kernel[8, compiler] < kernel[1, compiler] for compiler in ("gcc", "clang"))  # the kernels fork
    assert {r["compiler"] for r in rows} == {"gcc", "clang"}
    assert (out / "summary.md").read_text().count("| ok |") == 8
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "code_size.png", "gcc_vs_clang.png", "instructions.png", "memory.png", "speedup.png"]
    assert (out / "results.csv").read_text().startswith("model,platform,build,cores,")
    capsys.readouterr()

    assert main(["ablate", str(grid_file), "-o", str(out), "--jobs", "2"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert [r["cached"] for r in again] == [True] * 8
    assert [r["instructions"] for r in again] == [r["instructions"] for r in rows]
    assert "[8/8] 0 failed" in capsys.readouterr().out

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    messages = []
    run_grid(grid_file, out, out=messages.append)
    assert "plots skipped: matplotlib is not installed (pip install 'tvm-deeploy[plots]')" in messages
    monkeypatch.undo()

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        on_dask = run_grid(grid_file, tmp_path / "dask", scheduler=cluster.scheduler_address, out=messages.append)
    assert [(r["cached"], r["errors"]) for r in on_dask] == [(False, 0)] * 8
    assert [r["instructions"] for r in on_dask] == [r["instructions"] for r in rows]


def test_a_rerun_reads_finished_points_and_runs_the_rest(grid_file, tmp_path):
    """An interrupted run resumes: a stored row is read back, a failed or half-written one runs again."""
    points = parse_grid("[grid]\nmodel = ['mlp.onnx']\nbuild = ['npu']\ncores = [1, 2, 4]", grid_file.parent)
    keys = [point_key(point) for point in points]
    stored = {**points[0].axes(), "status": "skipped", "reason": "stored"}
    (tmp_path / "points" / keys[0]).mkdir(parents=True)
    (tmp_path / "points" / keys[0] / "row.json").write_text(json.dumps(stored))
    (tmp_path / "points" / keys[1]).mkdir(parents=True)
    (tmp_path / "points" / keys[1] / "row.json").write_text(json.dumps({**stored, "status": "failed"}))
    (tmp_path / "points" / keys[2]).mkdir(parents=True)
    (tmp_path / "points" / keys[2] / "row.partial").write_text("{")
    rows = run_points(points, tmp_path, jobs=1, out=lambda line: None)
    assert [(r["cached"], r["reason"]) for r in rows] == [
        (True, "stored"), (False, "qemu cannot count the NPU (run npu builds on host)"),
        (False, "qemu cannot count the NPU (run npu builds on host)")]
    assert all((tmp_path / "points" / key / "row.json").is_file() for key in keys)
