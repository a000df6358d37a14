"""The deeploy target, the default-pipeline hook, and partitioning as TVM users reach them."""

import tvm
from conftest import assert_close_f32, build_and_run
from tvm import relax
from tvm.relax import pipeline as relax_pipeline

import tvm_deeploy
from tvm_deeploy import models
from tvm_deeploy.targets.target import is_deeploy_target


def _offloaded_calls(ex) -> list[str]:
    return sorted({line.split()[1] for line in ex.as_text().splitlines()
                   if line.strip().startswith("call") and line.split()[1].endswith("_deeploy")})


def test_tag_is_the_siracusa_c_target():
    target = tvm.target.Target("deeploy")
    assert target.kind.name == "c"
    assert "deeploy" in list(target.keys)
    assert str(target.mcpu) == "siracusa"
    assert is_deeploy_target(target)
    assert not is_deeploy_target(tvm.target.Target("llvm"))
    assert not is_deeploy_target(None)


def test_relax_build_and_compile_both_offload():
    mod = models.mlp_attention()
    expected = ["fused_relax_matmul_relax_add1_deeploy", "fused_relax_matmul_relax_add_deeploy",
                "fused_relax_reshape_relax_nn_attention_relax_reshape_deeploy"]
    assert _offloaded_calls(tvm.relax.build(mod, target="deeploy")) == expected
    assert _offloaded_calls(tvm.compile(mod, target="deeploy")) == expected
    assert _offloaded_calls(tvm.compile(mod, target=tvm.target.Target("deeploy"))) == expected


def test_other_targets_build_exactly_as_before():
    mod = models.mlp_attention()
    tvm_default = relax_pipeline.PIPELINE_MAP["default"].tvm_default
    with tvm.target.Target("llvm"):
        ours = relax.get_pipeline("default")(mod)
        theirs = tvm_default()(mod)
    tvm.ir.assert_structural_equal(ours, theirs)
    assert _offloaded_calls(tvm.relax.build(mod, target="llvm")) == []


def test_installing_twice_wraps_once():
    wrapped = relax_pipeline.PIPELINE_MAP["default"]
    tvm_deeploy.pipeline.install()
    assert relax_pipeline.PIPELINE_MAP["default"] is wrapped


def test_partition_marks_codegen_and_is_idempotent():
    mod = models.transformer_block()
    once = tvm_deeploy.partition_for_deeploy(mod)
    twice = tvm_deeploy.partition_for_deeploy(once)
    tvm.ir.assert_structural_equal(once, twice)
    codegens = [f.attrs["Codegen"] for f in once.functions.values()
                if isinstance(f, relax.Function) and f.attrs and "Codegen" in f.attrs]
    assert codegens == ["deeploy"] * 8  # 6 linear layers, the attention, the residual add (called twice)


def test_named_pipeline_offloads_with_llvm_glue(tmp_path, rng):
    mod = models.transformer_block()
    x = rng.standard_normal((16, 32)).astype("float32")
    ex = tvm.relax.build(mod, target="llvm", relax_pipeline="deeploy")
    assert len(_offloaded_calls(ex)) == 8
    path = tmp_path / "named.so"
    ex.export_library(str(path))
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    assert_close_f32(vm["main"](tvm.runtime.tensor(x)).numpy(), build_and_run(mod, "llvm", [x], tmp_path))


def test_acceptance_mlp_then_attention_matches_llvm(tmp_path, rng):
    """The spine's bar: 2-layer MLP + scaled-dot-product attention, >= 3 offloaded functions."""
    mod = models.mlp_attention()
    ex = tvm.relax.build(mod, target="deeploy")
    assert len(_offloaded_calls(ex)) >= 3
    x = rng.standard_normal((16, 32)).astype("float32")
    ours = build_and_run(mod, "deeploy", [x], tmp_path)
    assert_close_f32(ours, build_and_run(mod, "llvm", [x], tmp_path))


def test_transformer_block_matches_llvm(tmp_path, rng):
    mod = models.transformer_block()
    x = rng.standard_normal((16, 32)).astype("float32")
    assert_close_f32(build_and_run(mod, "deeploy", [x], tmp_path), build_and_run(mod, "llvm", [x], tmp_path))


def test_solver_switches_travel_in_the_mcpu_string():
    from tvm_deeploy.targets.target import platform_of

    target = tvm_deeploy.target(l1_bytes=32768, tiler="greedy", planner="tvm")
    assert str(target.mcpu) == "siracusa,l1=32768,tiler=greedy,planner=tvm"
    platform = platform_of(target)
    assert (platform.l1_bytes, platform.tiler, platform.planner) == (32768, "greedy", "tvm")
    assert (platform_of(tvm_deeploy.target()).tiler, platform_of(tvm_deeploy.target()).planner) == ("cpsat", "cpsat")


def test_unknown_solver_switches_are_refused():
    import pytest

    with pytest.raises(ValueError, match="unknown tiler 'fast'; tilers are cpsat, greedy"):
        tvm_deeploy.target(tiler="fast")
    with pytest.raises(ValueError, match="unknown planner 'ilp'; planners are cpsat, greedy, tvm"):
        tvm_deeploy.target(planner="ilp")
