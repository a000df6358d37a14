"""Planning gives the same tilings and the same C at any machine load and with any search budget."""

import dataclasses
import subprocess
import sys

import pytest

import tvm_deeploy
from tvm_deeploy import models
from tvm_deeploy.emit.ops import emit_module
from tvm_deeploy.offload.functions import describe_function, offloaded_functions
from tvm_deeploy.offload.partition import partition_for_deeploy
from tvm_deeploy.plan.offloads import planned_functions
from tvm_deeploy.plan.tiling import tile_attention
from tvm_deeploy.plan.tiling.policy import TilingPolicy
from tvm_deeploy.targets.platforms import KIB, get_platform

PLATFORM = get_platform("siracusa").with_overrides(l1_bytes=64 * KIB)
TARGET = tvm_deeploy.target(l1_bytes=64 * KIB)
TINY_BUDGET = TilingPolicy(deterministic_seconds=0.01, wall_seconds_guard=0.5)


def _without_seconds(tiling):
    return dataclasses.replace(tiling, solver_seconds=0.0)


@pytest.fixture(scope="module")
def causal_512():
    """A 512-token causal prompt's attention, 2 heads of 16, partitioned."""
    return partition_for_deeploy(models.attention_layer(heads=2, head_dim=16, tokens=512))


def _attention(partitioned):
    ((_, func),) = offloaded_functions(partitioned)
    return describe_function(func)


def _plan_and_emit(partitioned):
    planned = planned_functions(tvm_deeploy.plan_offloads(partitioned, TARGET))
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
    unloaded = _without_seconds(tile_attention(_attention(causal_512).spec, PLATFORM))
    assert unloaded.solver_status == "optimal"
    tiling, source = _plan_and_emit(causal_512)
    assert tiling == unloaded
    assert _plan_and_emit(causal_512) == (tiling, source)


def test_a_tiny_budget_keeps_the_greedy_tiling(causal_512, cpu_hogs):
    spec = _attention(causal_512).spec
    greedy = _without_seconds(tile_attention(spec, PLATFORM.with_overrides(tiler="greedy")))
    assert greedy.solver_status == "greedy"
    runs = {_without_seconds(tile_attention(spec, PLATFORM, TINY_BUDGET)) for _ in range(3)}
    assert runs == {dataclasses.replace(greedy, solver_status="greedy (solver found none)")}
    assert greedy.l1_bytes <= PLATFORM.l1_bytes
    assert greedy.modelled_cycles >= tile_attention(spec, PLATFORM).modelled_cycles
