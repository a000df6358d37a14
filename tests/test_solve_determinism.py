"""Planning gives the same tilings and the same C at any machine load and with any search budget."""

import dataclasses
import subprocess
import sys

import pytest

from tvm_deeploy import models
from tvm_deeploy.emit.codegen import lower_functions, offloaded_functions, plan_functions
from tvm_deeploy.emit.ops import emit_module
from tvm_deeploy.offload.partition import partition_for_deeploy
from tvm_deeploy.plan.tiling import tile_attention
from tvm_deeploy.plan.tiling.policy import TilingPolicy
from tvm_deeploy.targets.platforms import KIB, get_platform

PLATFORM = get_platform("siracusa").with_overrides(l1_bytes=64 * KIB)
TINY_BUDGET = TilingPolicy(deterministic_seconds=0.01, wall_seconds_guard=0.5)


def _without_seconds(tiling):
    return dataclasses.replace(tiling, solver_seconds=0.0)


@pytest.fixture(scope="module")
def causal_512():
    """The offloaded attention of a 512-token causal prompt, 2 heads of 16."""
    (fn,) = lower_functions(offloaded_functions(partition_for_deeploy(models.attention_layer(heads=2, head_dim=16,
                                                                                            tokens=512))))
    return fn


def _plan_and_emit(fn, platform):
    planned = plan_functions([fn], platform)
    return _without_seconds(planned[0].tiling), emit_module(planned)


@pytest.fixture
def cpu_hogs():
    """Two busy processes beside the test, on a machine with few cores."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield
    for hog in hogs:
        hog.kill()
        hog.wait()


def test_512_token_causal_attention_is_the_same_under_load(causal_512, cpu_hogs):
    unloaded = _without_seconds(tile_attention(causal_512.spec, PLATFORM))
    assert unloaded.solver_status == "optimal"
    tiling, source = _plan_and_emit(causal_512, PLATFORM)
    assert tiling == unloaded
    assert _plan_and_emit(causal_512, PLATFORM) == (tiling, source)


def test_a_tiny_budget_keeps_the_greedy_tiling(causal_512, cpu_hogs):
    greedy = _without_seconds(tile_attention(causal_512.spec, PLATFORM.with_overrides(tiler="greedy")))
    assert greedy.solver_status == "greedy"
    runs = {_without_seconds(tile_attention(causal_512.spec, PLATFORM, TINY_BUDGET)) for _ in range(3)}
    assert runs == {dataclasses.replace(greedy, solver_status="greedy (solver found none)")}
    assert greedy.l1_bytes <= PLATFORM.l1_bytes
    assert greedy.modelled_cycles >= tile_attention(causal_512.spec, PLATFORM).modelled_cycles
