"""A non-editable `pip install .` ships c_kernels/ and codegen/ inside the wheel and builds from anywhere."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

BUILD_OUTSIDE = textwrap.dedent("""
    import numpy as np, tvm, tvm_deeploy
    from pathlib import Path
    from tvm import relax
    from tvm_deeploy import models
    from tvm_deeploy.targets.resources import resource_dir
    print("package", Path(tvm_deeploy.__file__).parent)
    print("kernels", resource_dir("c_kernels"))
    mod = models.mlp_attention()
    x = np.random.default_rng(0).standard_normal((16, 32)).astype("float32")
    outs = []
    for target in ("deeploy", "llvm"):
        tvm.relax.build(mod, target=target).export_library(f"{target}.so")
        vm = relax.VirtualMachine(tvm.runtime.load_module(f"{target}.so"), tvm.cpu())
        outs.append(vm["main"](tvm.runtime.tensor(x)).numpy())
    assert np.abs(outs[0] - outs[1]).max() <= 1e-5 * np.abs(outs[1]).max()
    print("built and matched")
""")


@pytest.mark.slow
def test_wheel_install_builds_outside_the_checkout(tmp_path):
    venv = tmp_path / "venv"
    # System site-packages supply TVM and friends; the package itself goes into the venv.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(REPO)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    run = subprocess.run([str(python), "-c", BUILD_OUTSIDE], cwd=work, check=True, capture_output=True, text=True)
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line)
    package = Path(lines["package"])
    assert venv in package.parents, f"imported {package}, not the wheel in the venv"
    assert Path(lines["kernels"]) == package / "c_kernels"
    assert (package / "codegen" / "module.c.tmpl").is_file()
    assert "built and matched" in run.stdout
    demo = subprocess.run([str(venv / "bin" / "tvm-deeploy"), "demo"], cwd=work, capture_output=True, text=True)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "demo: the C program's tokens equal the reference" in demo.stdout
