"""The Relax patterns the deeploy codegen offloads, each with a check that refuses what it cannot run.

A check runs the same `describe` the codegen uses: whatever it refuses stays in TVM, silently correct.
"""

from __future__ import annotations

from tvm.relax.backend.pattern_registry import get_patterns_with_prefix, register_patterns
from tvm.relax.dpl import is_const, is_op, wildcard
from tvm.relax.transform import PatternCheckContext

from .describe import CallTree, describe

PREFIX = "deeploy"


def _maybe_permuted(x):
    return is_op("relax.permute_dims")(x) | x


def _maybe(op: str, inner, commutative: bool = True):
    """`op(inner, const)` (or `op(const, inner)`) or just `inner`."""
    applied = is_op(op)(inner, is_const())
    if commutative:
        applied = applied | is_op(op)(is_const(), inner)
    return applied | inner


def _add_either_order(x, y):
    return is_op("relax.add")(x, y) | is_op("relax.add")(y, x)


def _matmul():
    return is_op("relax.matmul")(wildcard(), _maybe_permuted(wildcard()))


def matmul_pattern():
    return _matmul()


def gemm_pattern():
    return _add_either_order(_matmul(), wildcard())


def qdq_gemm_pattern():
    dequantize = lambda: is_op("relax.dequantize")(wildcard(), is_const(), is_const())  # noqa: E731
    matmul = is_op("relax.matmul")(dequantize(), _maybe_permuted(dequantize()))
    bias = is_op("relax.dequantize")(is_const(), is_const(), is_const()) | is_const()
    return is_op("relax.quantize")(_add_either_order(matmul, bias) | matmul, is_const(), is_const())


def int_requant_gemm_pattern():
    # matmul(int8, int8 -> int32) [+ bias] [* mul] [+ add] >> shift [+ zp] -> clip -> astype(int8)
    acc = _maybe("relax.add", _matmul())
    acc = _maybe("relax.add", _maybe("relax.multiply", acc))
    shifted = _maybe("relax.add", is_op("relax.right_shift")(acc, is_const()))
    return is_op("relax.astype")(is_op("relax.clip")(shifted, wildcard(), wildcard()))


def softmax_pattern():
    return is_op("relax.nn.softmax")(wildcard())


# Attention operands arrive through layout ops (up to VIEW_DEPTH of them, any order: permute_dims,
# reshape, repeat, ...) and, int8, one dequantize; the output leaves through up to OUT_DEPTH
# permute_dims / reshape and, int8, a quantize. describe turns the chains into strides.
VIEW_DEPTH = 7
OUT_DEPTH = 2


def _either(*patterns):
    result = patterns[0]
    for p in patterns[1:]:
        result = result | p
    return result


def _viewed(depth: int = VIEW_DEPTH, dequantize: bool = False):
    x = wildcard()
    for _ in range(depth):
        steps = [is_op("relax.permute_dims")(x), is_op("relax.reshape")(x, wildcard()), is_op("relax.repeat")(x),
                 is_op("relax.tile")(x), is_op("relax.broadcast_to")(x, wildcard()), is_op("relax.expand_dims")(x),
                 is_op("relax.squeeze")(x)]
        if dequantize:
            steps.append(is_op("relax.dequantize")(x, is_const(), is_const()))
        x = _either(*steps) | x
    return x


def _out_viewed(inner, depth: int = OUT_DEPTH):
    for _ in range(depth):
        inner = is_op("relax.permute_dims")(inner) | is_op("relax.reshape")(inner, wildcard()) | inner
    return inner


def _quantized(inner):
    return _out_viewed(is_op("relax.quantize")(_out_viewed(inner), is_const(), is_const()))


def _attention_op(operand):
    q, k, v = operand(), operand(), operand()
    return is_op("relax.nn.attention")(q, k, v) | is_op("relax.nn.attention_bias")(q, k, v, wildcard())


def _attention_chain(operand):
    # matmul(softmax([mask +] [scale *|/] matmul(Q, K^T)), V), each operand through its layout ops
    scores = is_op("relax.matmul")(operand(), operand())
    scaled = is_op("relax.divide")(scores, is_const()) | _maybe("relax.multiply", scores)
    masked = _add_either_order(scaled, wildcard()) | scaled
    return is_op("relax.matmul")(is_op("relax.nn.softmax")(masked), operand())


def attention_pattern():
    return _out_viewed(_attention_op(_viewed))


def attention_chain_pattern():
    return _out_viewed(_attention_chain(_viewed))


def attention_s8_pattern():
    return _quantized(_attention_op(lambda: _viewed(dequantize=True)))


def attention_chain_s8_pattern():
    return _quantized(_attention_chain(lambda: _viewed(dequantize=True)))


def attention_direct_pattern():
    """The fallback when a layout op of the full pattern cannot be absorbed (its result is used
    elsewhere, or no strided view expresses it): operands as they are."""
    return _attention_op(wildcard)


def attention_chain_direct_pattern():
    return _maybe_permuted(_attention_chain(lambda: _maybe_permuted(wildcard())))


# (pattern name, op family for `describe`, pattern builder), highest priority first.
PATTERNS = (
    ("attention_s8", "attention", attention_s8_pattern),
    ("attention_chain_s8", "attention", attention_chain_s8_pattern),
    ("attention", "attention", attention_pattern),
    ("attention_chain", "attention", attention_chain_pattern),
    ("attention_direct", "attention", attention_direct_pattern),
    ("attention_chain_direct", "attention", attention_chain_direct_pattern),
    ("gemm_qdq", "gemm", qdq_gemm_pattern),
    ("gemm_int_requant", "gemm", int_requant_gemm_pattern),
    ("gemm", "gemm", gemm_pattern),
    ("matmul", "gemm", matmul_pattern),
    ("softmax", "softmax", softmax_pattern),
)

FAMILY = {f"{PREFIX}.{name}": family for name, family, _ in PATTERNS}


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


def _make_check(family: str):
    def check(context: PatternCheckContext) -> bool:
        # An exception escaping a check aborts the process inside TVM: refuse instead.
        try:
            if _leaks_intermediate(context):
                return False
            describe(family, CallTree(dict(context.matched_bindings)), context.matched_expr)
            return True
        except Exception:  # noqa: BLE001 - anything we cannot describe stays in TVM
            return False

    return check


def register() -> None:
    """Register the deeploy patterns with TVM's pattern registry (later entries win there)."""
    entries = [(f"{PREFIX}.{name}", build(), {}, _make_check(family)) for name, family, build in PATTERNS]
    register_patterns(list(reversed(entries)))


def deeploy_patterns():
    """The registered deeploy patterns, highest priority first."""
    return get_patterns_with_prefix(PREFIX)
