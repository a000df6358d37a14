"""llama2.c checkpoints (`.bin`): a Llama decoder's configuration and fp32 weights.

The file (llama2.c's original "version 0" export) is seven little-endian int32 header fields

    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len

(vocab_size negative when the output head has weights of its own rather than sharing the token
embedding), then float32 arrays, each row-major, PyTorch's [out, in] layout for linear layers:

    token_embedding [vocab, dim]           rms_att [layers, dim]
    wq [layers, dim, dim]                  wk, wv [layers, kv_dim, dim]      wo [layers, dim, dim]
    rms_ffn [layers, dim]                  w1, w3 [layers, hidden, dim]      w2 [layers, dim, hidden]
    rms_final [dim]                        2 x [seq_len, head_dim / 2] (unused rotary tables)
    wcls [vocab, dim]                      only when not shared

with kv_dim = n_kv_heads * head_dim and head_dim = dim / n_heads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

_HEADER = struct.Struct("<7i")


class CheckpointError(ValueError):
    """The file is not a llama2.c checkpoint this package can load."""


@dataclass(frozen=True)
class LlamaConfig:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool = True

    def __post_init__(self):
        for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise CheckpointError(f"Llama config: {name} must be positive, got {getattr(self, name)}")
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise CheckpointError(f"Llama config: dim {self.dim} is not n_heads {self.n_heads} heads of an even "
                                  "size")
        if self.n_heads % self.n_kv_heads:
            raise CheckpointError(f"Llama config: n_heads {self.n_heads} is not a multiple of n_kv_heads "
                                  f"{self.n_kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim


# The sizes the package's tests, demo and benchmarks use, with the vocabulary of the shipped tokenizer.
# microLlama's context is 256: its fp32 KV cache (8 layers x 16 heads x 4 x K and V) at 512 positions would
# be 2 MiB, all of Siracusa's L2.
MICRO_LLAMA = LlamaConfig(dim=64, hidden_dim=256, n_layers=8, n_heads=16, n_kv_heads=16, vocab_size=512, seq_len=256)
STORIES_260K = LlamaConfig(dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512, seq_len=512)


@dataclass(frozen=True)
class LlamaWeights:
    """fp32 arrays in the checkpoint's layouts (see the module doc); `wcls` is the embedding when shared."""

    token_embedding: np.ndarray
    rms_att: np.ndarray
    wq: np.ndarray
    wk: np.ndarray
    wv: np.ndarray
    wo: np.ndarray
    rms_ffn: np.ndarray
    w1: np.ndarray
    w2: np.ndarray
    w3: np.ndarray
    rms_final: np.ndarray
    wcls: np.ndarray


@dataclass(frozen=True)
class Checkpoint:
    config: LlamaConfig
    weights: LlamaWeights


def weight_shapes(c: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every array of the file in file order (the rotary tables included), name -> shape."""
    half = c.head_dim // 2
    shapes = {"token_embedding": (c.vocab_size, c.dim), "rms_att": (c.n_layers, c.dim),
              "wq": (c.n_layers, c.dim, c.dim), "wk": (c.n_layers, c.kv_dim, c.dim),
              "wv": (c.n_layers, c.kv_dim, c.dim), "wo": (c.n_layers, c.dim, c.dim),
              "rms_ffn": (c.n_layers, c.dim), "w1": (c.n_layers, c.hidden_dim, c.dim),
              "w2": (c.n_layers, c.dim, c.hidden_dim), "w3": (c.n_layers, c.hidden_dim, c.dim),
              "rms_final": (c.dim,), "freq_cis_real": (c.seq_len, half), "freq_cis_imag": (c.seq_len, half)}
    if not c.shared_classifier:
        shapes["wcls"] = (c.vocab_size, c.dim)
    return shapes


def rope_tables(head_dim: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """The rotary embedding: cos and sin [context, head_dim / 2] of position * 10000^(-2j / head_dim)
    (computed in float64, stored float32), as llama2.c's export writes them."""
    freqs = 1.0 / 10000.0 ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.outer(np.arange(context, dtype=np.float64), freqs)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def load_checkpoint(path) -> Checkpoint:
    """Read a llama2.c `.bin`; raises CheckpointError naming what does not fit."""
    data = Path(path).read_bytes()
    if len(data) < _HEADER.size:
        raise CheckpointError(f"{path}: {len(data)} bytes is shorter than the {_HEADER.size}-byte header")
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = _HEADER.unpack_from(data)
    config = LlamaConfig(dim, hidden, layers, heads, kv_heads, abs(vocab), seq_len, shared_classifier=vocab > 0)
    shapes = weight_shapes(config)
    floats = sum(int(np.prod(s)) for s in shapes.values())
    expected = _HEADER.size + 4 * floats
    if len(data) != expected:
        raise CheckpointError(f"{path}: {len(data)} bytes, but the header {config} needs {expected} "
                              f"({floats} float32 weights after the header)")
    flat = np.frombuffer(data, dtype="<f4", offset=_HEADER.size)
    arrays, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        arrays[name] = flat[offset:offset + size].reshape(shape).astype(np.float32)
        offset += size
    arrays.pop("freq_cis_real")
    arrays.pop("freq_cis_imag")
    arrays.setdefault("wcls", arrays["token_embedding"])
    return Checkpoint(config, LlamaWeights(**arrays))


def save_checkpoint(path, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` in the format `load_checkpoint` reads (and llama2.c's run.c)."""
    c, w = checkpoint.config, checkpoint.weights
    cos, sin = rope_tables(c.head_dim, c.seq_len)
    arrays = {f.name: getattr(w, f.name) for f in fields(w)}
    arrays.update(freq_cis_real=cos, freq_cis_imag=sin)
    parts = [_HEADER.pack(c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                          c.vocab_size if c.shared_classifier else -c.vocab_size, c.seq_len)]
    for name, shape in weight_shapes(c).items():
        array = np.asarray(arrays[name], dtype=np.float32)
        if array.shape != shape:
            raise CheckpointError(f"weight {name}: shape {array.shape}, the config needs {shape}")
        parts.append(np.ascontiguousarray(array, dtype="<f4").tobytes())
    Path(path).write_bytes(b"".join(parts))


def random_checkpoint(config: LlamaConfig, seed: int = 0) -> Checkpoint:
    """Seeded random weights at initialisation scale (norm weights near 1): for sizes without a trained
    checkpoint, and for tests."""
    rng = np.random.default_rng(seed)
    shapes = weight_shapes(config)
    arrays = {}
    for name, shape in shapes.items():
        if name.startswith("freq_cis"):
            continue
        if name.startswith("rms"):
            arrays[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            arrays[name] = (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    if "wcls" not in arrays:
        arrays["wcls"] = arrays["token_embedding"]
    return Checkpoint(config, LlamaWeights(**arrays))
