"""Attention, fp32 and int8: `R.nn.attention` and the op-by-op chain matmul -> [scale] -> [mask] ->
softmax -> matmul, operands through layout ops -> one fused `dpl_attention_tiled`."""

from __future__ import annotations

from tvm.relax.dpl import is_const, is_op, wildcard

from ...emit.ops import _emit_attention
from ...plan.attribute import tiling_fields
from ...plan.tiling import AttentionTiling, tile_attention
from .. import reference
from ..describe import describe_attention
from ..dpl import add_either_order, either, maybe, maybe_permuted
from ..registry import Family, register
from ..specs import AttentionSpec

# Operands arrive through layout ops (up to VIEW_DEPTH of them, any order: permute_dims, reshape,
# repeat, ...) and, int8, one dequantize; Q and K may carry scalar multiplies (exporters split the
# softmax scale over both, torch's SDPA as √(1/√d) on each). The output leaves through up to OUT_DEPTH
# permute_dims / reshape and, int8, a quantize. describe turns the chains into strides and one scale.
VIEW_DEPTH = 7
OUT_DEPTH = 2


def _viewed(depth: int = VIEW_DEPTH, dequantize: bool = False, scaled: bool = False, source=None):
    x = wildcard() if source is None else source
    for _ in range(depth):
        steps = [is_op("relax.permute_dims")(x), is_op("relax.reshape")(x, wildcard()), is_op("relax.repeat")(x),
                 is_op("relax.tile")(x), is_op("relax.broadcast_to")(x, wildcard()), is_op("relax.expand_dims")(x),
                 is_op("relax.squeeze")(x)]
        if dequantize:
            steps.append(is_op("relax.dequantize")(x, is_const(), is_const()))
        if scaled:
            steps += [is_op("relax.multiply")(x, is_const()), is_op("relax.multiply")(is_const(), x)]
        x = either(*steps) | x
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


def _attention_chain(operand, k_operand=None, v_operand=None):
    # matmul([guard] softmax([mask +] [scale *|/] matmul(Q, K^T)), V), each operand through its layout
    # ops. The guard, SDPA's where(isnan(p), 0, p), is what the kernel does anyway: a row with no visible key is 0.
    k_operand, v_operand = k_operand or operand, v_operand or operand
    scores = is_op("relax.matmul")(operand(scaled=True), k_operand(scaled=True))
    scaled = is_op("relax.divide")(scores, is_const()) | maybe("relax.multiply", scores)
    masked = add_either_order(scaled, wildcard()) | scaled
    probs = is_op("relax.nn.softmax")(masked)
    guarded = is_op("relax.where")(is_op("relax.isnan")(probs), is_const(), probs) | probs
    return is_op("relax.matmul")(guarded, v_operand())


# The fp32 kernel reads a K or V that is an int8 tensor dequantized on the way (an int8 KV cache) as int8
# and dequantizes it in L1. Separate patterns require the dequantize in K and V, in K only, in V only, before
# the plain ones: if absorbing a dequantize is refused (its result is also used elsewhere), a later pattern
# matches without it.
INT8_SOURCE_DEPTH = 2  # layout ops between the int8 tensor and its dequantize


def _int8_viewed(scaled: bool = False):
    source = is_op("relax.dequantize")(_viewed(INT8_SOURCE_DEPTH), is_const(), is_const())
    return _viewed(scaled=scaled, source=source)


def _int8_kv_operands(int8: str):
    """(K, V) operand builders with a dequantize in those `int8` names ("kv", "k" or "v")."""
    return tuple(_int8_viewed if name in int8 else _viewed for name in "kv")


def _attention_op_int8(int8: str):
    k, v = _int8_kv_operands(int8)
    return lambda: _out_viewed(is_op("relax.nn.attention")(_viewed(), k(), v())
                               | is_op("relax.nn.attention_bias")(_viewed(), k(), v(), wildcard()))


def _attention_chain_int8(int8: str):
    k, v = _int8_kv_operands(int8)
    return lambda: _out_viewed(_attention_chain(_viewed, k, v))


def attention_pattern():
    return _out_viewed(_attention_op(_viewed))


def attention_chain_pattern():
    return _out_viewed(_attention_chain(_viewed))


def attention_s8_pattern():
    return _quantized(_attention_op(lambda: _viewed(dequantize=True)))


def attention_chain_s8_pattern():
    return _quantized(_attention_chain(lambda scaled=False: _viewed(dequantize=True, scaled=scaled)))


def attention_direct_pattern():
    """The fallback when a layout op of the full pattern cannot be absorbed (its result is used
    elsewhere, or no strided view expresses it): operands as they are."""
    return _attention_op(wildcard)


def attention_chain_direct_pattern():
    return maybe_permuted(_attention_chain(lambda scaled=False: maybe_permuted(wildcard())))


def plan(spec: AttentionSpec, platform) -> dict:
    t = tile_attention(spec, platform)
    return {"engine": "cluster", **t.report(), "dma_bytes": t.dma_in_bytes + t.dma_out_bytes,
            "modelled_cycles": {"cluster": t.modelled_cycles}, "tiling": tiling_fields(t)}


def summary(spec: AttentionSpec) -> str:
    int8_kv = "".join(name for name, dq in (("k", spec.k_dequant), ("v", spec.v_dequant)) if dq)
    return (f"attention {spec.dtype} batch={spec.batch} heads={spec.heads}/{spec.kv_heads} q={spec.q_len} "
            f"kv={spec.kv_len} d={spec.qk_dim}/{spec.v_dim} causal={spec.causal}"
            + (f" int8 {int8_kv}" if int8_kv else ""))


FAMILY = register(Family(
    kind=AttentionSpec.kind,
    patterns=(("attention_s8", attention_s8_pattern), ("attention_chain_s8", attention_chain_s8_pattern),
              *((f"attention_int8_{int8}", _attention_op_int8(int8)) for int8 in ("kv", "k", "v")),
              *((f"attention_chain_int8_{int8}", _attention_chain_int8(int8)) for int8 in ("kv", "k", "v")),
              ("attention", attention_pattern), ("attention_chain", attention_chain_pattern),
              ("attention_direct", attention_direct_pattern),
              ("attention_chain_direct", attention_chain_direct_pattern)),
    describe=describe_attention, plan=plan, tiling_type=AttentionTiling, emit=_emit_attention,
    reference=lambda spec: reference.attention_s8 if spec.dtype == "int8" else reference.attention_f32,
    summary=summary, shapes=lambda spec: {name: list(getattr(spec, name).shape) for name in ("q", "k", "v")}))
