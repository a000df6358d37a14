"""The `tvm-deeploy` command line."""

import pytest

from tvm_deeploy.cli import main


@pytest.mark.rv32
def test_demo_generates_text_equal_to_the_reference(capsys):
    assert main(["demo", "--tokens", "20"]) == 0
    out = capsys.readouterr().out
    assert "Prompt: 'Once upon a time, there was a little girl named Lily.' (17 tokens)" in out
    assert "NumPy int8 reference: 20/20 tokens equal, identical for the first 20: MATCH" in out
    assert "KV cache 640.0 KiB" in out
    assert "on the NPU" in out and "tokens/s on this host" in out
    assert "hand-written fp32 C (one core): " in out
    assert "instructions per token; tokens equal to the reference" in out and "RV32 cluster under qemu" in out
    assert out.rstrip().endswith("demo: the C program's tokens equal the reference")


@pytest.mark.parametrize("args, message", [
    (["--tokens", "0"], "--tokens must be at least 1, got 0"),
    (["--tokens", "600"], "17 prompt tokens + 600 generated tokens exceed the caches' context of 512 positions"),
])
def test_demo_refuses_what_does_not_fit(capsys, args, message):
    assert main(["demo", "--no-qemu", *args]) == 2
    assert capsys.readouterr().err.strip() == f"tvm-deeploy demo: error: {message}"


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["compile"], "the following arguments are required: model, -o/--output"),
    (["run", "out", "--harts", "two"], "argument --harts: invalid int value: 'two'"),
    (["run", "out", "--on", "fpga"], "argument --on: invalid choice: 'fpga'"),
])
def test_usage_errors_are_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
