"""Pattern building blocks the op families share (tvm.relax.dpl)."""

from __future__ import annotations

from tvm.relax.dpl import is_const, is_op, wildcard


def maybe_permuted(x):
    return is_op("relax.permute_dims")(x) | x


def maybe(op: str, inner, commutative: bool = True):
    """`op(inner, const)` (or `op(const, inner)`) or just `inner`."""
    applied = is_op(op)(inner, is_const())
    if commutative:
        applied = applied | is_op(op)(is_const(), inner)
    return applied | inner


def add_either_order(x, y):
    return is_op("relax.add")(x, y) | is_op("relax.add")(y, x)


def either(*patterns):
    result = patterns[0]
    for p in patterns[1:]:
        result = result | p
    return result


def matmul():
    return is_op("relax.matmul")(wildcard(), maybe_permuted(wildcard()))
