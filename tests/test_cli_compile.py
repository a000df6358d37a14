"""`tvm-deeploy compile` and `tvm-deeploy run`: ONNX model -> standalone C project -> run on this host."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import helper
from test_onnx import F32, make_model, multi_head_attention, save

from tvm_deeploy.cli import main


@pytest.fixture(scope="module")
def attention_onnx(tmp_path_factory):
    model = multi_head_attention(np.random.default_rng(0), seq=16, embed=32, heads=4, mask=-1e9)
    return save(model, tmp_path_factory.mktemp("onnx"))


def test_compile_then_run_on_host(attention_onnx, tmp_path, capfd):
    out = tmp_path / "mha"
    assert main(["compile", str(attention_onnx), "-o", str(out)]) == 0
    printed = capfd.readouterr().out
    assert "5 offloaded to deeploy" in printed and "L2 arena" in printed and "StaticPlanBlockMemory" in printed
    assert (out / "include" / "net.h").is_file() and (out / "Makefile").is_file()
    assert main(["run", str(out), "--on", "host"]) == 0
    assert "Errors: 0 out of 512" in capfd.readouterr().out


def test_no_offload_baseline_with_platform_flags_and_sanitizers(attention_onnx, tmp_path, capfd):
    out = tmp_path / "baseline"
    args = ["compile", str(attention_onnx), "-o", str(out), "--no-offload", "--platform", "generic",
            "--l1", "32768", "--l2", "262144", "--prefix", "mha"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["offload"] is False and report["counts"]["deeploy"] == 0
    assert report["target"]["mcpu"] == "generic,l1=32768,l2=262144"
    assert report["memory"]["L2"]["capacity_bytes"] == 262144
    assert main(["run", str(out), "--sanitize"]) == 0
    assert "Errors: 0 out of 512" in capfd.readouterr().out


def test_no_npu_flag_reaches_the_target(attention_onnx, tmp_path):
    out = tmp_path / "no_npu"
    assert main(["compile", str(attention_onnx), "-o", str(out), "--no-npu", "--io-in-arena"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["target"]["npu"] is False and report["target"]["mcpu"] == "siracusa,npu=0"
    assert report["io_in_arena"] is True


def fails_with(args, capsys, *fragments):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_compile_errors_are_one_line(attention_onnx, tmp_path, capsys):
    dynamic = save(make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": (F32, ("batch", 16))},
                              {"y": (F32, ("batch", 8))}, {"w": np.ones((16, 8), np.float32)}), tmp_path, "dyn.onnx")
    fails_with(["compile", str(dynamic), "-o", str(tmp_path / "a")], capsys, "dynamic shapes", "(batch, 16)")
    fails_with(["compile", str(attention_onnx), "-o", str(tmp_path / "b"), "--l2", "4096"], capsys,
               "do not fit L2", "need 8192 bytes", "4096 bytes are available")
    fails_with(["compile", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "c")], capsys, "missing.onnx")
    fails_with(["compile", str(attention_onnx), "-o", str(tmp_path / "d"), "--platform", "pulpissimo"], capsys,
               "unknown platform 'pulpissimo'")


def test_run_errors(tmp_path, capsys):
    fails_with(["run", str(tmp_path)], capsys, "no report.json")
    (tmp_path / "report.json").write_text(json.dumps({"prefix": "net"}))
    fails_with(["run", str(tmp_path), "--on", "qemu", "--harts", "0"], capsys, "--harts must be at least 1")


def test_bad_output_is_refused_before_any_work(attention_onnx, tmp_path, capsys):
    existing = tmp_path / "file.txt"
    existing.write_text("x")
    fails_with(["compile", str(attention_onnx), "-o", str(existing)], capsys, f"-o {existing}: exists and is not a folder")
    fails_with(["compile", str(attention_onnx), "-o", str(existing / "out")], capsys, f"{existing} is not a folder")
    fails_with(["compile", str(tmp_path / "missing.onnx"), "-o", str(existing)], capsys, "exists and is not a folder")


def test_damaged_project_is_one_line(attention_onnx, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", str(attention_onnx), "-o", str(out)]) == 0
    capsys.readouterr()
    (out / "src" / "net.c").unlink()
    fails_with(["run", str(out)], capsys, f"{out} is damaged: 1 file(s) missing (src/net.c)")
    (out / "report.json").write_text('{"prefix": ')
    fails_with(["run", str(out)], capsys, "report.json is damaged (Expecting value")
    (out / "report.json").write_text('{"prefix": "net"}')
    fails_with(["run", str(out), "--on", "qemu"], capsys, "report.json is damaged (it needs prefix, files, ops, target)")


def test_tvm_internal_error_is_one_line(attention_onnx, tmp_path, capsys, monkeypatch):
    """A failure inside TVM that no check foresaw still ends as one line, exit 2."""
    import tvm

    from tvm_deeploy.program import export

    def fail(*args, **kwargs):
        raise tvm.error.InternalError("Check failed: fb->value != 0 (0 vs. 0) :\n  Divide by zero")
    monkeypatch.setattr(export, "export_c", fail)
    fails_with(["compile", str(attention_onnx), "-o", str(tmp_path / "out")], capsys,
               "TVM could not build the model: InternalError: Check failed: fb->value != 0 (0 vs. 0) : Divide by zero")
