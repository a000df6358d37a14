"""int8 quantization of a Llama checkpoint: the one definition of the int8 model's parameters.

Every linear layer gets int8 weights with one scale per output channel (symmetric, [-127, 127]) and
int8 activations with one scale per tensor (symmetric, zero point 0), calibrated as the largest |value|
the fp32 model produces on a calibration prompt. In the graph each layer is QDQ:
quantize(x) -> dequantize -> matmul with the dequantized weight -> quantize(y) -> dequantize, which the
deeploy codegen runs as an int8 GEMM with a fixed-point requantization (`reference.requantize_fixed`).
The output head keeps its int32 accumulator (int8 logits would tie at the maximum): logits are
acc * (x_scale * w_scale[n]) in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..offload import reference
from .checkpoint import Checkpoint

LAYER_LINEARS = ("wq", "wk", "wv", "wo", "w1", "w3", "w2")
QMAX = 127.0


@dataclass(frozen=True)
class QuantLinear:
    weight: np.ndarray  # int8 [in, out]
    weight_scale: np.ndarray  # float32 [out]
    in_scale: np.float32
    out_scale: np.float32 | None  # None: the int32 accumulator is dequantized (the output head)

    def requant(self) -> tuple[np.ndarray, np.ndarray]:
        """(mul, shift) of the fixed-point requantization, exactly as the codegen derives them."""
        _, mul, shift = reference.qdq_requant(self.in_scale, self.weight_scale, self.out_scale)
        return mul, shift

    def logit_scale(self) -> np.ndarray:
        """float32 per-column factor turning the head's int32 accumulator into logits."""
        return (self.in_scale * self.weight_scale).astype(np.float32)


@dataclass(frozen=True)
class LlamaQuant:
    layers: tuple[dict[str, QuantLinear], ...]  # per layer, LAYER_LINEARS -> layer
    head: QuantLinear
    # per layer, the (key, value) scales of an int8 KV cache: per tensor, symmetric, from the largest |key|
    # (after the rotary embedding) and |value| of the calibration prompt
    kv_scales: tuple[tuple[np.float32, np.float32], ...] = ()


def activation_scale(max_abs: float) -> np.float32:
    """Symmetric per-tensor scale; a tensor that was all zeros on the calibration prompt gets 1/127."""
    return np.float32(max_abs / QMAX) if max_abs > 0 else np.float32(1.0 / QMAX)


def quantize_weight(weight_out_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[out, in] fp32 -> (int8 [in, out], float32 scales [out]), per output channel."""
    w = np.asarray(weight_out_in, np.float32)
    max_abs = np.abs(w).max(axis=1)
    scale = np.where(max_abs > 0, max_abs / QMAX, 1.0 / QMAX).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -QMAX, QMAX).astype(np.int8)
    return np.ascontiguousarray(q.T), scale


def quantize_activation(x: np.ndarray, scale) -> np.ndarray:
    """TVM's quantize with zero point 0: nearbyint(x / scale) (halves to even), clamped to int8."""
    return np.clip(np.rint(np.asarray(x, np.float32) / np.float32(scale)), -128, 127).astype(np.int8)


def quantize_checkpoint(checkpoint: Checkpoint, maxima: dict[str, float]) -> LlamaQuant:
    """The int8 model from calibration maxima: `maxima[f"{layer}.{name}.in"]` and `.out` for every linear
    layer (`"head.in"` for the head), `f"{layer}.k"` and `f"{layer}.v"` for the KV cache, as
    `llama_reference.calibrate` records them."""
    w = checkpoint.weights
    layers = []
    for i in range(checkpoint.config.n_layers):
        linears = {}
        for name in LAYER_LINEARS:
            q, scale = quantize_weight(getattr(w, name)[i])
            linears[name] = QuantLinear(q, scale, activation_scale(maxima[f"{i}.{name}.in"]),
                                        activation_scale(maxima[f"{i}.{name}.out"]))
        layers.append(linears)
    q, scale = quantize_weight(w.wcls)
    head = QuantLinear(q, scale, activation_scale(maxima["head.in"]), None)
    kv_scales = tuple((activation_scale(maxima[f"{i}.k"]), activation_scale(maxima[f"{i}.v"]))
                      for i in range(checkpoint.config.n_layers))
    return LlamaQuant(tuple(layers), head, kv_scales)
