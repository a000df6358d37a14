"""The `tvm-deeploy` command line."""

import pytest

from tvm_deeploy.cli import main


def test_demo_reports_offload_and_match(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "offloaded to deeploy (7 functions)" in out
    assert "attention float32 batch=1 heads=4/4 q=16 kv=16 d=8/8 causal=top_left" in out
    assert "kept in TVM: add x2, nn.layer_norm x2, nn.relu x1\n" in out
    assert "offloaded to deeploy (2 functions)" in out
    assert out.count("MATCH") == 2 and "MISMATCH" not in out
    assert out.rstrip().endswith("demo: all results match TVM's own build")


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
