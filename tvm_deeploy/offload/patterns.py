"""Register every op family's Relax patterns with TVM, each with a check that refuses what its kernel
cannot run.

A check runs the family's `describe`, the one the codegen uses: an `Unsupported` it raises means "this
kernel does not take it" and the match stays in TVM. Any other exception is a bug: TVM aborts the
process if one escapes a check, so the check records it and refuses the match, and
`checked_matching` (around `partition_for_deeploy`'s matching) raises it afterwards.
"""

from __future__ import annotations

import contextlib
import traceback

from tvm.relax.backend.pattern_registry import get_patterns_with_prefix, register_patterns
from tvm.relax.transform import PatternCheckContext

from .describe import CallTree, Unsupported
from .families import PREFIX, Family, families

__all__ = ["PREFIX", "PatternCheckError", "checked_matching", "deeploy_patterns", "raise_check_errors", "register"]


class PatternCheckError(RuntimeError):
    """A pattern check failed with an exception other than `Unsupported` (a bug in a describe)."""


# Failures of checks TVM called since the last `raise_check_errors`: TVM calls a check from C++, so
# this is the only way out for its exception.
_check_errors: list[str] = []


def raise_check_errors() -> None:
    """Raise PatternCheckError for the check failures recorded since the last call (and forget them)."""
    if _check_errors:
        errors = list(_check_errors)
        _check_errors.clear()
        raise PatternCheckError(f"{len(errors)} pattern check(s) failed:\n" + "\n".join(errors))


@contextlib.contextmanager
def checked_matching():
    """Around pattern matching: afterwards, raise PatternCheckError for any check that failed."""
    _check_errors.clear()
    yield
    raise_check_errors()


def _leaks_intermediate(context: PatternCheckContext) -> bool:
    """True if a value computed inside the match is also used outside it (fusing would lose it)."""
    root_var = context.value_to_bound_var[context.matched_expr]
    inside = set(context.matched_bindings.keys())
    for var in inside:
        if var.same_as(root_var):
            continue
        if any(user not in inside for user in context.var_usages.get(var, [])):
            return True
    return False


def _make_check(family: Family, pattern: str):
    def check(context: PatternCheckContext) -> bool:
        try:
            if _leaks_intermediate(context):
                return False
            family.describe(CallTree(dict(context.matched_bindings)), context.matched_expr)
            return True
        except Unsupported:
            return False
        except Exception:  # noqa: BLE001 - must not escape into TVM; raised by raise_check_errors
            _check_errors.append(f"{PREFIX}.{pattern} on {context.matched_expr}:\n{traceback.format_exc()}")
            return False

    return check


def register() -> None:
    """Register the families' patterns with TVM's pattern registry (later entries win there)."""
    entries = [(f"{PREFIX}.{name}", build(), {}, _make_check(family, name))
               for family in families() for name, build in family.patterns]
    register_patterns(list(reversed(entries)))


def deeploy_patterns():
    """The registered deeploy patterns, highest priority first."""
    return get_patterns_with_prefix(PREFIX)
