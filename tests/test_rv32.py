"""The RV32 build under qemu: exported projects built with `make rv32` and run with `tvm-deeploy run --on
qemu` on 1 and 8 harts (Errors: 0, exact and repeatable instruction counts per step and hart), the
bare-metal HAL's fork/join, barrier and DMA on 1, 2 and 8 harts, and the int8 GEMM kernel's instructions
per MAC and bit-exactness on rv32imc."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from test_cli_compile import attention_onnx  # noqa: F401 (a fixture)

import tvm_deeploy
from tvm_deeploy import models
from tvm_deeploy.cli import main
from tvm_deeploy.targets import kernel_count, qemu
from tvm_deeploy.targets.platforms import get_platform

pytestmark = pytest.mark.rv32
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def int8_mlp_projects(tmp_path_factory):
    """int8_mlp (int8 in and out, QDQ layers) exported for the cluster with 8 cores and with 1."""
    folder = tmp_path_factory.mktemp("rv32")
    return {cores: tvm_deeploy.export_c(models.int8_mlp(), tvm_deeploy.target(cores=cores, npu=False),
                                        folder / f"c{cores}")
            for cores in (8, 1)}


def test_int8_model_on_the_npu_under_qemu(tmp_path, capsys):
    """The same layers on the NPU: its functional model runs on RV32 too, weights in their own region."""
    exported = tvm_deeploy.export_c(models.int8_mlp(), tvm_deeploy.target(npu=True), tmp_path / "npu")
    assert {op["engine"] for op in exported.report["ops"] if op["kind"] == "deeploy"} == {"npu"}
    code = main(["run", str(exported.out_dir), "--on", "qemu", "--harts", "8", "--json", "--timeout", "120"])
    run = json.loads(capsys.readouterr().out)
    assert code == 0 and run["errors"] == 0 and run["checked"] == 16 * 64, run["output"]
    for step, op in zip(run["steps"], exported.report["ops"]):
        assert step["dma_to_l1"] == op["plan"]["dma_in_bytes"]  # activations in; the weights stay put


def test_platform_memory_sizes_reach_the_linker(int8_mlp_projects, tmp_path):
    """The Makefile links with the platform's L1, L2 and NPU weight memory; a platform without an NPU gets an
    empty weight region and its program still links and runs."""
    siracusa = get_platform("siracusa")
    makefile = (int8_mlp_projects[8].out_dir / "Makefile").read_text()
    for symbol, size in (("__dpl_l1_bytes", siracusa.l1_bytes), ("__dpl_l2_bytes", siracusa.level("L2").bytes),
                         ("__dpl_npu_weight_bytes", siracusa.level("weights").bytes)):
        assert f"--defsym={symbol}={size} " in makefile
    generic = tvm_deeploy.export_c(models.int8_mlp(), tvm_deeploy.target("generic"), tmp_path / "generic")
    assert "--defsym=__dpl_npu_weight_bytes=0 " in (generic.out_dir / "Makefile").read_text()
    run = qemu.run_project(generic.out_dir, timeout=120)
    assert (run.exit_code, run.errors, run.checked) == (0, 0, 16 * 64)


def test_int8_model_on_8_harts(int8_mlp_projects, capsys):
    exported = int8_mlp_projects[8]
    assert "-march=rv32imc -mabi=ilp32" in (exported.out_dir / "Makefile").read_text()
    assert exported.report["rv32"] == {"march": "rv32imc", "reason": "the network computes no float"}
    code = main(["run", str(exported.out_dir), "--on", "qemu", "--harts", "8", "--json", "--timeout", "120"])
    run = json.loads(capsys.readouterr().out)
    assert code == 0 and run["errors"] == 0 and run["checked"] == 16 * 64, run["output"]
    ops = exported.report["ops"]
    assert [s["step"] for s in run["steps"]] == [op["step"] for op in ops]
    for step, op in zip(run["steps"], ops):
        assert step["op"] == op["op"] and len(step["instructions"]) == 8
        assert all(count > 0 for count in step["instructions"])  # every hart ran its share
        assert step["dma_to_l1"] == op["plan"]["dma_in_bytes"] and step["dma_to_l2"] == op["plan"]["dma_out_bytes"]
    assert run["instructions"]["slowest_hart"] == max(run["instructions"]["per_hart"])


def test_counts_are_repeatable_and_8_harts_beat_1(int8_mlp_projects):
    eight = qemu.run_project(int8_mlp_projects[8].out_dir, harts=8, timeout=120)
    assert eight.steps == qemu.run_project(int8_mlp_projects[8].out_dir, harts=8, timeout=120).steps
    one = qemu.run_project(int8_mlp_projects[1].out_dir, harts=1, timeout=120)
    assert one.errors == 0 and one.harts == 1
    assert 5 * eight.slowest_hart_instructions < one.slowest_hart_instructions
    # the work is split, not repeated: the harts together run about what one hart runs alone
    assert sum(eight.per_hart_instructions) < 1.2 * one.slowest_hart_instructions


def test_int8_model_with_harts_running_at_once(int8_mlp_projects):
    """The same ELF under qemu without -icount: 8 host threads run the forks at once."""
    elf = qemu.build(int8_mlp_projects[8].out_dir, 8, "net")
    for _ in range(3):
        code, output = qemu.run_elf(elf, 8, timeout=120, icount=False)
        assert code == 0 and "Errors: 0 out of 1024" in output, output


def test_too_few_harts_is_a_clear_error(int8_mlp_projects, capsys):
    assert main(["run", str(int8_mlp_projects[8].out_dir), "--on", "qemu", "--harts", "2"]) == 2
    assert "forks over 8 cores: run it on at least 8 harts" in capsys.readouterr().err


def test_compiled_float_onnx_model_under_qemu(attention_onnx, tmp_path, capfd):  # noqa: F811
    """`tvm-deeploy compile` then `run --on qemu`: a float model builds for rv32imafc."""
    out = tmp_path / "mha"
    assert main(["compile", str(attention_onnx), "-o", str(out)]) == 0
    assert "-march=rv32imafc -mabi=ilp32f" in (out / "Makefile").read_text()
    assert json.loads((out / "report.json").read_text())["rv32"]["march"] == "rv32imafc"
    capfd.readouterr()
    assert main(["run", str(out), "--on", "qemu", "--timeout", "120"]) == 0
    printed = capfd.readouterr().out
    assert "RV32 under qemu, 8 harts" in printed and "Errors: 0 out of 512" in printed
    assert "cluster" in printed and "total" in printed


@pytest.mark.parametrize("harts", [1, 2, 8])
def test_hal_fork_join_barrier_dma(harts, tmp_path):
    elf = qemu.build_program([HERE / "rv32" / "hal_check.c"], tmp_path / "hal_check.elf", harts=harts,
                             flags=("-DDPL_PROFILE_STEPS=1",))
    code, output = qemu.run_elf(elf, harts, timeout=60)
    assert code == 0 and "hal check: 0 errors" in output, output


def test_hal_with_harts_running_at_once(tmp_path):
    """Without -icount qemu runs every hart on a thread of its own: the flags alone keep fork/join and the
    barriers right (the instruction counts then follow the host's clock and are not checked)."""
    elf = qemu.build_program([HERE / "rv32" / "hal_check.c"], tmp_path / "hal_check.elf", harts=8,
                             flags=("-DDPL_PROFILE_STEPS=1", "-DCHECK_COUNTS=0"))
    for _ in range(3):
        code, output = qemu.run_elf(elf, 8, timeout=60, icount=False)
        assert code == 0 and "hal check: 0 errors" in output, output


def test_hal_fork_cost_on_8_harts(tmp_path):
    """scripts/bench_fork.py's figures (rv32imafc): an empty fork over 8 harts costs hart 0 at most 120
    instructions and each worker's whole wake-run-sleep loop at most 100 (149 and 170 with a go flag per
    hart and the idle loop counted)."""
    spec = importlib.util.spec_from_file_location("bench_fork", HERE.parent / "scripts" / "bench_fork.py")
    bench_fork = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_fork)
    row = bench_fork.measure(8, tmp_path)
    assert row["hart0_per_fork"] <= 120 and row["worker_per_fork"] <= 100, row


def test_int8_gemm_kernel_under_3_instructions_per_mac():
    """c_kernels/gemm_s8.c on rv32imc, one hart: the 64x256x64 GEMM (int32 out) at most 2.65 instructions per
    MAC (2.94 before its pairs of rows shared their multiplies), and with the fixed-point requantization to int8
    as QDQ models use it at most 2.7."""
    plain = kernel_count.gemm_s8_count(64, 64, 256)
    requantized = kernel_count.gemm_s8_count(64, 64, 256, requantize=True)
    assert plain.errors == 0 and requantized.errors == 0
    assert plain.per_mac <= 2.65 and requantized.per_mac <= 2.7, (plain.per_mac, requantized.per_mac)


@pytest.mark.parametrize("m, transposed, bound", [
    (1, False, 3.75), (2, False, 3.0), (3, False, 3.25), (4, False, 3.0),  # decode: one token, or a few
    (1, True, 4.15),                                                        # a GEMV against a [n, k] weight
])
def test_int8_gemm_kernel_decode_shapes(m, transposed, bound):
    """Few-row GEMMs at K = 64 with the fixed-point requantization, as a decode step runs them: single rows
    in 1 x 16 register blocks (a MAC is a load, a mul and an add; 4.45 instructions per MAC before), pairs
    of rows in 16-bit lanes (3.68 before), the requantization about 15 instructions an output."""
    count = kernel_count.gemm_s8_count(m, 64, 64, transposed=transposed, requantize=True)
    assert count.errors == 0
    assert count.per_mac <= bound, count.per_mac


@pytest.mark.parametrize("m, n, k, a_zp, b_zp, transposed, requantize", [
    (7, 13, 37, 3, -2, False, True),   # every edge block, both zero points
    (7, 13, 37, -5, 4, True, False),   # B transposed
    (1, 24, 65, 0, 0, False, True),    # a GEMV
    (6, 70, 16, -128, 0, False, False),  # more columns than a chunk of column sums
    (1, 29, 40, 0, 0, False, True),      # 1 x 16, 1 x 8, 1 x 4 and 1 x 1 blocks, the bias used in place
    (3, 7, 40, 0, 0, True, True),        # 2 x 4 and 1 x 4 blocks of a transposed B
])
def test_int8_gemm_kernel_is_bit_exact_on_rv32(m, n, k, a_zp, b_zp, transposed, requantize):
    count = kernel_count.gemm_s8_count(m, n, k, a_zp, b_zp, transposed, requantize, seed=m * n)
    assert count.errors == 0
