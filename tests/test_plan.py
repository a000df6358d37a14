"""The planning stage: `plan_offloads` writes each offloaded function's decisions as "deeploy.plan";
the codegen, `compile_report` and report.json read exactly that."""

import dataclasses

import numpy as np
import pytest
import tvm
from test_patterns import graph
from tvm import relax

import tvm_deeploy
from tvm_deeploy import models
from tvm_deeploy.emit.codegen import run_codegen
from tvm_deeploy.offload import patterns
from tvm_deeploy.offload.families import families, family_of, gemm
from tvm_deeploy.offload.functions import offloaded_functions
from tvm_deeploy.offload.specs import GemmSpec, Operand
from tvm_deeploy.plan.attribute import PLAN_ATTR, plain
from tvm_deeploy.plan.tiling import tile_gemm
from tvm_deeploy.targets.target import platform_of

W = np.arange(40, dtype="float32").reshape(8, 5)
DESCRIPTIVE = {"op", "summary", "shapes", "output_shape", "dtype", "out_dtype", "call_sites"}


def matmul_module():
    return graph([((4, 8), "float32")], lambda bb, x: relax.op.matmul(x, relax.const(W)))


def plans(mod) -> dict:
    return {str(f.attrs["global_symbol"]): plain(f.attrs[PLAN_ATTR]) for _, f in offloaded_functions(mod)}


def test_planned_ir_is_the_partitioned_ir_with_the_plan_attribute():
    """As TVM's BYOC tests do: build the expected module and compare structurally."""
    target = tvm_deeploy.target(npu=False)
    partitioned = tvm_deeploy.partition_for_deeploy(matmul_module())
    planned = tvm_deeploy.plan_offloads(partitioned, target)

    spec = GemmSpec("float32", "float32", (), 4, 5, 8, Operand((4, 8), "float32", param=0),
                    Operand((8, 5), "float32", const=W), False, (), ())
    t = tile_gemm(spec, platform_of(target), "cluster")  # what the tiler decides for this GEMM
    tiling = {name: list(v) if isinstance(v, tuple) else v
              for name, v in dataclasses.asdict(t).items() if name != "solver_seconds"}
    plan = {"engine": "cluster", "b_layout": "as stored", "tile": [4, 5, 8], "tile_axes": ["m", "n", "k"], "tiles": 1,
            "cores": 8, "l1_bytes": t.l1_bytes,
            "single_buffered": [n for n, s in (("a", t.l1_a), ("b", t.l1_b)) if s[0] == s[1]],
            "dma_in_bytes": 4 * 8 * 4 + 8 * 5 * 4, "dma_out_bytes": 4 * 5 * 4, "dma_bytes": 368,
            "dma_lower_bound": 368, "modelled_cycles": {"cluster": t.modelled_cycles}, "solver_status": "optimal",
            "tiling": tiling}
    expected = tvm.IRModule(dict(partitioned.functions), attrs=partitioned.attrs)
    ((gvar, func),) = offloaded_functions(partitioned)
    expected[gvar] = func.with_attr(PLAN_ATTR, plan)
    tvm.ir.assert_structural_equal(planned, expected)
    assert PLAN_ATTR not in func.attrs  # the input module is left as it was


def test_plan_attribute_survives_run_codegen_and_is_required():
    partitioned = tvm_deeploy.partition_for_deeploy(matmul_module())
    planned = tvm_deeploy.plan_offloads(partitioned, "deeploy")
    _, (fn,) = run_codegen(planned)
    assert fn.plan == plans(planned)[fn.symbol] and fn.tiling.tile_m == fn.plan["tile"][0]
    with pytest.raises(Exception, match=r'has no "deeploy.plan" attribute: run tvm_deeploy.plan_offloads'):
        relax.transform.RunCodegen()(partitioned)


def test_compile_report_shows_exactly_the_plan():
    mod = models.transformer_block()
    target = tvm_deeploy.target()
    attrs = plans(tvm_deeploy.plan_offloads(tvm_deeploy.partition_for_deeploy(mod), target))
    report = tvm_deeploy.compile_report(mod, target)
    assert sorted(report) == sorted(attrs)
    assert {e["op"] for e in report.values()} == {"gemm", "attention", "residual_add"}
    for symbol, entry in report.items():
        assert {k: v for k, v in entry.items() if k not in DESCRIPTIVE} == attrs[symbol]


def test_report_json_shows_exactly_the_plan(tmp_path):
    mod = models.int8_mlp()
    target = tvm_deeploy.target(npu=True)
    attrs = plans(tvm_deeploy.plan_offloads(tvm_deeploy.partition_for_deeploy(mod), target))
    report = tvm_deeploy.export_c(mod, target, tmp_path, test_vectors=False).report
    ops = {op["callee"]: op["plan"] for op in report["ops"] if op["kind"] == "deeploy"}
    assert ops == attrs and {plan["engine"] for plan in ops.values()} == {"npu"}


def test_every_pattern_belongs_to_one_family():
    names = [name for family in families() for name, _ in family.patterns]
    assert len(names) == len(set(names))
    assert [str(p.name) for p in patterns.deeploy_patterns()] == [f"{patterns.PREFIX}.{n}" for n in names]
    # attention holds matmuls and a softmax: first; families holding an add or a quantize come before the
    # families whose pattern is any add or any quantize
    kinds = [f.kind for f in families()]
    assert kinds[0] == "attention" and len(kinds) == len(set(kinds))
    assert max(kinds.index(k) for k in ("rope", "swiglu", "rms_norm")) < kinds.index("residual_add")
    assert max(kinds.index(k) for k in ("gemm", "rms_norm", "swiglu")) < kinds.index("quantize")
    assert family_of("gemm") is gemm.FAMILY


def test_a_check_that_fails_other_than_unsupported_raises():
    def broken(tree, root):
        raise KeyError("a bug in describe")

    original = gemm.FAMILY.describe
    object.__setattr__(gemm.FAMILY, "describe", broken)  # the registered checks read it at match time
    try:
        with pytest.raises(patterns.PatternCheckError, match="(?s)deeploy.matmul on .*KeyError: 'a bug in describe'"):
            tvm_deeploy.partition_for_deeploy(matmul_module())
    finally:
        object.__setattr__(gemm.FAMILY, "describe", original)
    assert [name for name, _ in offloaded_functions(tvm_deeploy.partition_for_deeploy(matmul_module()))]
