"""views.py: a chain of layout ops as strides over its source, against NumPy doing the same ops."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_deeploy.offload import views

SHAPE = (2, 3, 4, 5)


def _apply(rng, arr, view, op):
    """Apply one random layout op to a NumPy array (of source offsets) and to its view."""
    if op == "permute":
        axes = rng.permutation(arr.ndim)
        return arr.transpose(axes), views.permute(view, axes)
    if op == "repeat":
        axis, times = int(rng.integers(arr.ndim)), int(rng.integers(1, 4))
        return np.repeat(arr, times, axis), views.repeat(view, times, axis)
    if op == "tile":
        reps = [int(r) for r in rng.integers(1, 3, arr.ndim)]
        return np.tile(arr, reps), views.tile(view, reps)
    if op == "broadcast":
        axis = int(rng.integers(arr.ndim + 1))
        arr2 = np.expand_dims(arr, axis)
        shape = list(arr2.shape)
        shape[axis] = int(rng.integers(1, 4))
        return np.broadcast_to(arr2, shape), views.broadcast_to(views.reshape(view, arr2.shape), shape)
    # reshape: merge two neighbouring axes or split one
    shape = list(arr.shape)
    if rng.random() < 0.5 and arr.ndim > 1:
        i = int(rng.integers(arr.ndim - 1))
        shape[i:i + 2] = [shape[i] * shape[i + 1]]
    else:
        i = int(rng.integers(arr.ndim))
        n = shape[i]
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        d = int(rng.choice(divisors))
        shape[i:i + 1] = [n // d, d]
    try:
        return arr.reshape(shape), views.reshape(view, shape)
    except views.ViewError:
        return arr, view  # not every reshape of a repeated or strided view is a view: stay put


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ops=st.lists(st.sampled_from(["permute", "repeat", "tile", "broadcast",
                                                                      "reshape"]), max_size=5))
def test_chains_match_numpy(seed, ops):
    rng = np.random.default_rng(seed)
    arr = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    view = views.contiguous(SHAPE)
    for op in ops:
        if arr.size > 20000:
            break
        arr, view = _apply(rng, arr, view, op)
        assert views.shape_of(view) == arr.shape
        np.testing.assert_array_equal(views.element_offsets(view), arr)


def test_grouped_query_repeat_is_a_head_map():
    """Llama's repeat_kv (expand_dims, broadcast_to, reshape) on [b, kv_heads, L, d]: query head h
    reads K/V head h // group; tile: h % kv_heads."""
    kv = views.contiguous((1, 4, 7, 8))
    grouped = views.reshape(views.broadcast_to(views.reshape(kv, (1, 4, 1, 7, 8)), (1, 4, 2, 7, 8)), (1, 8, 7, 8))
    assert grouped[1] == views.Axis(8, 56, div=2, mod=4)
    tiled = views.tile(kv, (1, 2, 1, 1))
    assert tiled[1] == views.Axis(8, 56, div=1, mod=4)


def test_what_is_not_a_view_is_refused():
    repeated = views.repeat(views.contiguous((3, 4)), 2, 0)  # rows 0 0 1 1 2 2
    with pytest.raises(views.ViewError):
        views.reshape(views.permute(repeated, (1, 0)), (24,))
