"""The one registry of op families.

A family is everything the compiler knows about one kind of offloaded op: the Relax patterns that
match it, `describe` (matched call tree -> spec), `plan` (spec -> the "deeploy.plan" attribute: engine,
tiling, figures), `emit` (spec + plan -> C), the NumPy reference its kernel follows, and its report
entry. Each family module registers one `Family`; the stages dispatch through `family_of`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    kind: str  # the `kind` of the family's spec class
    patterns: tuple[tuple[str, Callable], ...]  # (pattern name, builder), highest priority first
    describe: Callable  # (CallTree, root) -> spec; raises describe.Unsupported for what the kernel does not take
    plan: Callable  # (spec, Platform) -> the plan attribute as plain data (see plan/offloads.py)
    tiling_type: type | None  # the plan's "tiling" fields rebuild this (None: the op runs untiled)
    emit: Callable  # (emit.ops body, spec) -> None: declarations and the kernel call
    reference: Callable  # spec -> the NumPy function its C kernel is checked against
    summary: Callable  # spec -> one line, for comments and reports
    shapes: Callable  # spec -> {operand: shape}, for reports


PREFIX = "deeploy"  # patterns register as "deeploy.<name>"; partitioned functions carry Codegen="deeploy"

_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family; registration order is pattern priority (earlier families match first)."""
    if family.kind in _FAMILIES:
        raise ValueError(f"op family {family.kind!r} is registered twice")
    _FAMILIES[family.kind] = family
    return family


def families() -> tuple[Family, ...]:
    """Every registered family, highest pattern priority first."""
    return tuple(_FAMILIES.values())


def family_of_pattern(composite: str) -> Family:
    """The family of a registered pattern, by its composite name ("deeploy.<pattern>")."""
    for family in _FAMILIES.values():
        if any(f"{PREFIX}.{name}" == composite for name, _ in family.patterns):
            return family
    raise KeyError(f"no op family has the pattern {composite}")


def family_of(spec_or_kind) -> Family:
    """The family of a spec (or of a spec kind)."""
    kind = spec_or_kind if isinstance(spec_or_kind, str) else spec_or_kind.kind
    if kind not in _FAMILIES:
        raise KeyError(f"no op family {kind!r} is registered (known: {', '.join(_FAMILIES)})")
    return _FAMILIES[kind]
