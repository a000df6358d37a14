"""Shared helpers: build a Relax module for a target, run it in the VM on this host, compare."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tvm
from hypothesis import settings
from tvm import relax

import tvm_deeploy
from tvm_deeploy.offload import patterns
from tvm_deeploy.offload.patterns import PREFIX
from tvm_deeploy.targets.qemu import missing_tools

# Hypothesis: no deadlines (compiles and solver calls vary with machine load); in CI (the CI variable set)
# the same examples every run and no example database, so a failure reproduces from the log alone.
settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_collection_modifyitems(config, items):
    """Tests marked rv32 skip, saying what is missing, only where the RV32 tools are not installed."""
    missing = missing_tools()
    if missing:
        skip = pytest.mark.skip(reason=f"rv32: {', '.join(missing)} not found (scripts/setup.sh installs them)")
        for item in items:
            if "rv32" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def no_failed_pattern_checks():
    """A pattern check that failed other than by refusing (a bug) fails the test that ran it, wherever
    the matching ran (partition_for_deeploy raises it itself)."""
    yield
    patterns.raise_check_errors()


def build_and_run(mod: tvm.IRModule, target, inputs, tmp_path, name: str = "lib", options=()):
    """`tvm.relax.build(mod, target)`, export_library (with compiler `options`), load, run `main` on numpy
    inputs."""
    ex = tvm.relax.build(mod, target=target)
    label = target if isinstance(target, str) else target.kind.name + "_" + "_".join(target.keys)
    path = tmp_path / f"{label}_{name}.so"
    ex.export_library(str(path), options=list(options))
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs])
    if isinstance(out, tvm.runtime.Tensor):
        return out.numpy()
    return [o.numpy() for o in out]


def offloaded(mod: tvm.IRModule) -> list[str]:
    """Composite pattern names of the functions `partition_for_deeploy` offloads, sorted."""
    names = []
    for gvar, func in tvm_deeploy.partition_for_deeploy(mod).functions.items():
        if isinstance(func, relax.Function) and func.attrs and func.attrs.get("Codegen") == "deeploy":
            for block in func.body.blocks:
                for binding in block.bindings:
                    value = binding.value
                    if isinstance(value, relax.Function) and "Composite" in value.attrs:
                        names.append(str(value.attrs["Composite"])[len(PREFIX) + 1:])
    return sorted(names)


def assert_close_f32(actual, expected, rtol=1e-5):
    """fp32 policy: within rtol relative to the output's magnitude (absolute floor rtol * max|expected|)."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * float(np.abs(expected).max() or 1.0))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


KERNEL_DIR = Path(__file__).resolve().parents[1] / "c_kernels"
KERNEL_SOURCES = sorted(KERNEL_DIR.glob("*.c"))  # every portable kernel (the HALs live in hal/)
HAL_HOST = KERNEL_DIR / "hal" / "host.c"  # the host HAL the tiled kernels call
C_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]


def run_checked(cmd: list) -> subprocess.CompletedProcess:
    """Run a build or program step; a failure fails the test with the command line and its output."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}"
    return proc


def run_c_program(folder: Path, name: str, source: str, *args) -> str:
    """Write `source` to folder/name.c, build it with gcc (C_FLAGS; `args`: more sources, includes, libraries,
    in command-line order after it), run it; its standard output."""
    program, binary = folder / f"{name}.c", folder / name
    program.write_text(source)
    run_checked(["gcc", *C_FLAGS, program, *args, "-o", binary])
    return run_checked([binary]).stdout


@pytest.fixture(scope="module")
def build_dir(request, tmp_path_factory):
    """A folder for the C a test module compiles (the module is skipped without gcc)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not available")
    return tmp_path_factory.mktemp(request.module.__name__)
