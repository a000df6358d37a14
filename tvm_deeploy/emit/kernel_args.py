"""The argument structs of the C kernels (c_kernels/dpl_kernels.h) and the enums of their members, described
once.

c_kernels/dpl_kernel_args.h is generated from these descriptions and committed (a test checks it is
current); after changing one, regenerate it:

    python -c "from tvm_deeploy.emit.kernel_args import write_header; write_header()"
"""

from __future__ import annotations

from pathlib import Path

from ..plan.lanes import LANES_PANEL
from ..targets.resources import resource_dir
from .c import Enum, Field, Struct, declaration

HEADER = "dpl_kernel_args.h"

DTYPE = Enum("dpl_dtype", "DPL_", "The element type of a kernel's operands.", (("f32", "float"), ("s8", "int8_t")))

ENGINE = Enum("dpl_engine", "DPL_ENGINE_", "Which engine computes a GEMM's tiles (dpl_gemm_tiled).", (
    ("cluster", "the cores, each tile's rows or columns split among them"),
    ("npu", "the NPU (dpl_npu.h): DPL_S8 with FIXED requantization and no zero points; B is the packed weight\n"
            "matrix resident in the NPU's weight memory, never fetched (no B slots), tile_n a multiple of\n"
            "DPL_NPU_GROUP unless it covers all n, and each tile one NPU job instead of a fork over the cores"),
))

REQUANT_MODE = Enum("dpl_requant_mode", "DPL_REQUANT_", "How an int8 GEMM turns its int32 accumulator into the stored "
                    "output.", (
    ("none", "store acc (+ bias) as int32"),
    ("fixed", "QDQ graphs: y = clamp((((int64)acc * mul[n] + 2^(shift[n]-1)) >> shift[n]) + out_zp, lo, hi)\n"
              "with 1 <= shift[n] <= 62, all in int64 (round half up, arithmetic shift)"),
    ("int_ops", "integer graphs, TVM's int32 op semantics (wrap-around on overflow):\n"
                "t = acc * mul[n]; t = t + add[n]; t = t >> shift[n]; t = t + out_zp; y = clamp(t, lo, hi).\n"
                "A NULL mul/add/shift skips that step. 0 <= shift[n] <= 31 (arithmetic shift)."),
))

CAUSAL = Enum("dpl_causal", "DPL_CAUSAL_", "Which keys an attention's query sees.", (
    ("none", "all"),
    ("top_left", "query i sees keys j <= i"),
    ("bottom_right", "query i sees keys j <= i + (kv_len - q_len)"),
))

REQUANT = Struct("dpl_requant", "An int8 GEMM's requantization (enum dpl_requant_mode says what each vector does).", (
    Field("mode", "int32_t", "enum dpl_requant_mode"),
    Field("bias", "const int32_t *", "[n] added to the accumulator first (int32 add, wraps), or NULL"),
    Field("mul", "const int32_t *", "[n]"),
    Field("add", "const int32_t *", "[n], DPL_REQUANT_INT_OPS only, or NULL"),
    Field("shift", "const int32_t *", "[n]"),
    Field("out_zp", "int32_t"),
    Field("lo", "int32_t", "clamp bounds, within [-128, 127] for int8 output"),
    Field("hi", "int32_t"),
))

GEMM_PLAN = Struct("dpl_gemm_plan", "The tiler's plan of one GEMM (dpl_gemm_tiled).", (
    Field("dtype", "int32_t", "enum dpl_dtype of A and B"),
    Field("m", "int32_t", "per batch: A [m][k], B [k][n] (or [n][k]), Y [m][n]"),
    Field("n", "int32_t"),
    Field("k", "int32_t"),
    Field("b_transposed", "int32_t"),
    Field("tile_m", "int32_t", "output tile; edge tiles are smaller"),
    Field("tile_n", "int32_t"),
    Field("batch", "int32_t", "independent GEMMs; Y is [batch][m][n] contiguous"),
    Field("a_batch_offsets", "const int32_t *", "element offset of each batch's A (NULL: b * m * k)"),
    Field("b_batch_offsets", "const int32_t *", "element offset of each batch's B (NULL: b * k * n)"),
    Field("l1_a", "uint32_t", "byte offsets of the double buffers in the L1 arena", count=2),
    Field("l1_b", "uint32_t", count=2),
    Field("l1_y", "uint32_t", count=2),
    Field("cores", "int32_t"),
    Field("a_zp", "int32_t", "DPL_S8 only", default=0),
    Field("b_zp", "int32_t", "DPL_S8 only", default=0),
    Field("engine", "int32_t", "enum dpl_engine"),
    Field("b_lanes_chunk", "int32_t", "DPL_S8 on the cluster: 0, B as laid out; > 0, B packed in lane words\n"
          "(dpl_gemm_s8_lanes: panels of DPL_GEMM_S8_LANES_PANEL columns, b_transposed 0, a_zp 0),\n"
          "the sums taken out every b_lanes_chunk k steps", default=0),
))

STRIDES = Struct(
    "dpl_strides",
    "Element strides of a 4-D (batch, head, sequence, feature) view of a tensor;\n"
    "a stride of 0 broadcasts that axis.",
    tuple(Field(axis, "int32_t") for axis in ("batch", "head", "seq", "feat")))

# The int8 attention's integer constants (reference.AttentionQuant); 0 for DPL_F32.
ATTENTION_QUANT_FIELDS = ("q_zp", "k_zp", "v_zp", "out_zp", "exp_mul", "exp_shift", "e_shift", "out_mul",
                          "out_shift", "lo", "hi")

ATTENTION_PLAN = Struct("dpl_attention_plan", "The tiler's plan of one fused attention (dpl_attention_tiled).", (
    Field("dtype", "int32_t", "enum dpl_dtype of Q, K, V and O"),
    *(Field(name, "int32_t") for name in ("batch", "heads", "kv_heads", "kv_div", "q_len", "kv_len", "qk_dim",
                                          "v_dim")),
    Field("causal", "int32_t", "enum dpl_causal"),
    Field("tile_h", "int32_t", "query heads of a tile"),
    Field("tile_q", "int32_t", "query rows of a tile"),
    Field("tile_kv", "int32_t", "keys of a block"),
    Field("q", STRIDES, "element strides in L2"),
    Field("k", STRIDES, "per K/V head"),
    Field("v", STRIDES, "per K/V head"),
    Field("mask", STRIDES),
    Field("o", STRIDES),
    Field("l1_q", "uint32_t", "byte offsets of the double buffers in the L1 arena", count=2),
    *(Field(f"l1_{name}", "uint32_t", count=2) for name in ("k", "v", "mask", "o")),
    Field("l1_state", "uint32_t", "per (head, row) of a tile: F32 {max, sum}; S8 {max, sum, acc[v_dim]}"),
    Field("l1_scores", "uint32_t", "per core: tile_kv scores of 4 bytes (F32, kv_div >= 2: two blocks; at least 2)"),
    Field("l1_lut", "uint32_t", "S8: the 256-entry exp2 table"),
    Field("cores", "int32_t"),
    Field("scale", "float", "F32: scores = (q . k) * scale (+ mask)"),
    *(Field(name, "int32_t", "S8 (reference.AttentionQuant)" if name == "q_zp" else "", default=0)
      for name in ATTENTION_QUANT_FIELDS),
    Field("k_dequant", "int32_t", "F32: 1, K is int8 in L2, each block dequantized in L1 into l1_k_f32", default=0),
    Field("v_dequant", "int32_t", "F32: 1, V likewise (into l1_v_f32)", default=0),
    Field("l1_k_f32", "uint32_t", "byte offsets of the dequantized K and V blocks", default=0),
    Field("l1_v_f32", "uint32_t", default=0),
    Field("k_dq_scale", "float", "k = (float)(k_int8 - k_dq_zp) * k_dq_scale, TVM's dequantize", default=0),
    Field("k_dq_zp", "int32_t", default=0),
    Field("v_dq_scale", "float", default=0),
    Field("v_dq_zp", "int32_t", default=0),
))

QUANT = Struct("dpl_quant", "A per-tensor int8 quantization, TVM's: q = clamp(nearbyint(x / scale) + zp, -128, 127),\n"
               "x = (float)(q - zp) * scale.", (
    Field("scale", "float"),
    Field("zp", "int32_t"),
))

ENUMS = (DTYPE, ENGINE, REQUANT_MODE, CAUSAL)
STRUCTS = (REQUANT, GEMM_PLAN, STRIDES, ATTENTION_PLAN, QUANT)


def header_source() -> str:
    """The text of c_kernels/dpl_kernel_args.h."""
    declarations = "\n\n".join(declaration(item) for item in ENUMS + STRUCTS)
    return ("/*\n"
            f" * {HEADER} (generated by tvm_deeploy/emit/kernel_args.py; do not edit): the argument structs of the\n"
            " * kernels in dpl_kernels.h and their enums. Generated code fills the structs by member name.\n"
            " */\n"
            "#ifndef DPL_KERNEL_ARGS_H\n#define DPL_KERNEL_ARGS_H\n\n#include <stdint.h>\n\n"
            "/* columns per panel of a B packed in lane words (tvm_deeploy/plan/lanes.py) */\n"
            f"#define DPL_GEMM_S8_LANES_PANEL {LANES_PANEL}\n\n"
            f"{declarations}\n\n#endif /* DPL_KERNEL_ARGS_H */\n")



def write_header() -> Path:
    path = resource_dir("c_kernels") / HEADER
    path.write_text(header_source())
    return path
