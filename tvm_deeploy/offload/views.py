"""Layout views: where each element of a chain of layout ops' result lives in the tensor the chain starts
from, so a kernel can read (or write) that tensor in place instead of TVM materializing the chain.

A view is one `Axis` per dimension of the result: element index i along it contributes
``((i // div) % mod) * stride`` elements of offset. A plain axis has div 1 and mod = size; `repeat`
grows div (K/V heads shared by groups of query heads), `tile` and merges of a broadcast axis give mod
(heads cycling over K/V heads); a broadcast axis has stride 0. Every other axis has a size that is a
multiple of div * mod (equal unless tiled).
Supported ops: permute_dims, reshape, expand_dims, squeeze, repeat, tile, broadcast_to; anything a
view cannot express raises ViewError.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

VIEW_OPS = ("relax.permute_dims", "relax.reshape", "relax.expand_dims", "relax.squeeze", "relax.repeat",
            "relax.tile", "relax.broadcast_to")


class ViewError(Exception):
    """The layout chain is not a strided view of its source."""


@dataclass(frozen=True)
class Axis:
    size: int
    stride: int
    div: int = 1
    mod: int = 0  # 0: the axis size (plain)

    def __post_init__(self):
        if self.mod == 0:
            object.__setattr__(self, "mod", self.size)
        if self.stride == 0 or self.size == 1:  # normal form of an axis that does not move
            object.__setattr__(self, "stride", 0)
            object.__setattr__(self, "div", 1)
            object.__setattr__(self, "mod", 1)

    @property
    def broadcast(self) -> bool:
        return self.stride == 0

    @property
    def plain(self) -> bool:
        return self.broadcast or (self.div == 1 and self.mod == self.size)

    def offsets(self):
        return [((i // self.div) % self.mod) * self.stride for i in range(self.size)]


View = tuple[Axis, ...]


def contiguous(shape: Sequence[int]) -> View:
    axes, step = [], 1
    for dim in reversed(shape):
        axes.append(Axis(int(dim), step))
        step *= int(dim)
    return tuple(reversed(axes))


def shape_of(view: View) -> tuple[int, ...]:
    return tuple(a.size for a in view)


def permute(view: View, axes: Sequence[int] | None) -> View:
    order = tuple(reversed(range(len(view)))) if axes is None else tuple(int(a) % len(view) for a in axes)
    return tuple(view[a] for a in order)


def inverse_permute(view: View, axes: Sequence[int] | None) -> View:
    """The view of a permute_dims' input, given the view of its output."""
    order = tuple(reversed(range(len(view)))) if axes is None else tuple(int(a) % len(view) for a in axes)
    result: list[Axis | None] = [None] * len(view)
    for position, axis in enumerate(order):
        result[axis] = view[position]
    return tuple(result)  # type: ignore[arg-type]


def _merge(outer: Axis, inner: Axis) -> Axis:
    size = outer.size * inner.size
    if outer.broadcast:  # the index is i % inner.size, a multiple of inner.div * inner.mod
        return Axis(size, inner.stride, inner.div, inner.mod) if not inner.broadcast else Axis(size, 0)
    if inner.broadcast:
        return Axis(size, outer.stride, outer.div * inner.size, outer.mod)
    if (outer.div == 1 and outer.mod == outer.size and inner.size == inner.div * inner.mod
            and outer.stride == inner.mod * inner.stride):
        return Axis(size, inner.stride, inner.div, inner.mod * outer.size)
    raise ViewError(f"cannot merge axes {outer} and {inner}")


def _split(axis: Axis, dims: Sequence[int]) -> list[Axis]:
    """Split an axis into dims (outer first). Index i contributes ((i // div) % mod) * stride: the
    innermost dims whose product is div do not move it, the next ones whose product is mod step it
    plainly, the outer rest (a tiled axis' repetitions) do not move it."""
    if len(dims) == 1:
        return [axis]
    if axis.broadcast:
        return [Axis(d, 0) for d in dims]
    n = len(dims)
    for k2 in range(n, -1, -1):
        if math.prod(dims[k2:]) != axis.div:
            continue
        for k1 in range(k2, -1, -1):
            if math.prod(dims[k1:k2]) == axis.mod:
                moving, step = [], axis.stride
                for d in reversed(dims[k1:k2]):
                    moving.append(Axis(d, step))
                    step *= d
                return [Axis(d, 0) for d in dims[:k1]] + moving[::-1] + [Axis(d, 0) for d in dims[k2:]]
    raise ViewError(f"cannot split {axis} into {list(dims)}")


def reshape(view: View, shape: Sequence[int]) -> View:
    shape = [int(d) for d in shape]
    old = [a for a in view if a.size != 1]
    if math.prod(a.size for a in view) != math.prod(shape):
        raise ViewError(f"reshape of {shape_of(view)} to {shape}")
    result: list[Axis] = []
    i = j = 0
    while j < len(shape):
        if shape[j] == 1:
            result.append(Axis(1, 0))
            j += 1
            continue
        group, dims = [old[i]], [shape[j]]
        i, j = i + 1, j + 1
        while math.prod(a.size for a in group) != math.prod(dims):
            if math.prod(a.size for a in group) < math.prod(dims):
                group.append(old[i])
                i += 1
            else:
                dims.append(shape[j])
                j += 1
        merged = group[-1]
        for outer in reversed(group[:-1]):
            merged = _merge(outer, merged)
        result.extend(_split(merged, dims))
    return tuple(result)


def repeat(view: View, repeats: int, axis: int) -> View:
    axis %= len(view)
    a = view[axis]
    grown = Axis(a.size * repeats, 0) if a.broadcast else Axis(a.size * repeats, a.stride, a.div * repeats, a.mod)
    return view[:axis] + (grown,) + view[axis + 1:]


def tile(view: View, repeats: Sequence[int]) -> View:
    reps = [int(r) for r in repeats]
    if len(reps) > len(view):
        view = tuple(Axis(1, 0) for _ in range(len(reps) - len(view))) + view
    reps = [1] * (len(view) - len(reps)) + reps
    return tuple(Axis(a.size * r, 0) if a.broadcast else Axis(a.size * r, a.stride, a.div, a.mod)
                 for a, r in zip(view, reps))


def broadcast_to(view: View, shape: Sequence[int]) -> View:
    shape = [int(d) for d in shape]
    if len(shape) < len(view):
        raise ViewError(f"broadcast_to {shape} drops axes of {shape_of(view)}")
    padded = tuple(Axis(1, 0) for _ in range(len(shape) - len(view))) + view
    out = []
    for a, d in zip(padded, shape):
        if a.size == d:
            out.append(a)
        elif a.size == 1:
            out.append(Axis(d, 0))
        else:
            raise ViewError(f"broadcast_to {shape} from {shape_of(view)}")
    return tuple(out)


def element_offsets(view: View):
    """Every element's offset in the source, in the view's row-major order (for tests)."""
    import numpy as np

    offsets = np.zeros(shape_of(view), dtype=np.int64)
    for k, axis in enumerate(view):
        shape = [1] * len(view)
        shape[k] = axis.size
        offsets = offsets + np.asarray(axis.offsets(), dtype=np.int64).reshape(shape)
    return offsets
