"""checkpoint: llama2.c `.bin` files written and read back, the shipped model, files that do not fit."""

from __future__ import annotations

import struct
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

import tvm_deeploy
from tvm_deeploy.lm.checkpoint import (
    STORIES_260K,
    CheckpointError,
    LlamaConfig,
    load_checkpoint,
    random_checkpoint,
    save_checkpoint,
    weight_shapes,
)

SHIPPED = Path(tvm_deeploy.__file__).parent / "data" / "stories260k.bin"
SMALL = LlamaConfig(dim=16, hidden_dim=24, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32, seq_len=8)


def file_floats(config: LlamaConfig) -> int:
    return sum(int(np.prod(shape)) for shape in weight_shapes(config).values())


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_round_trip(tmp_path, shared, seed):
    config = replace(SMALL, shared_classifier=shared)
    checkpoint = random_checkpoint(config, seed=seed)
    path = tmp_path / "model.bin"
    save_checkpoint(path, checkpoint)
    data = path.read_bytes()
    assert struct.unpack_from("<7i", data) == (16, 24, 2, 4, 2, 32 if shared else -32, 8)
    assert len(data) == 28 + 4 * file_floats(config)
    loaded = load_checkpoint(path)
    assert loaded.config == config
    for field in fields(loaded.weights):
        assert np.array_equal(getattr(loaded.weights, field.name), getattr(checkpoint.weights, field.name)), field.name
    assert np.array_equal(loaded.weights.wcls, loaded.weights.token_embedding) == shared


def test_rotary_tables_are_written(tmp_path):
    path = tmp_path / "model.bin"
    save_checkpoint(path, random_checkpoint(SMALL))
    floats = np.frombuffer(path.read_bytes(), dtype="<f4", offset=28)
    half, table = SMALL.head_dim // 2, SMALL.seq_len * SMALL.head_dim // 2
    cos, sin = floats[-2 * table:-table].reshape(SMALL.seq_len, half), floats[-table:].reshape(SMALL.seq_len, half)
    angles = np.outer(np.arange(SMALL.seq_len), 1.0 / 10000.0 ** (np.arange(0, SMALL.head_dim, 2) / SMALL.head_dim))
    np.testing.assert_allclose(cos, np.cos(angles), atol=1e-7)
    np.testing.assert_allclose(sin, np.sin(angles), atol=1e-7)


def test_shipped_checkpoint():
    checkpoint = load_checkpoint(SHIPPED)
    assert checkpoint.config == STORIES_260K
    assert SHIPPED.stat().st_size == 28 + 4 * file_floats(STORIES_260K)
    for field in fields(checkpoint.weights):
        assert np.isfinite(getattr(checkpoint.weights, field.name)).all(), field.name
    assert checkpoint.weights.wcls is checkpoint.weights.token_embedding


@pytest.mark.parametrize("change", [-4, -1, 1, 4])
def test_wrong_size_names_the_byte_counts(tmp_path, change):
    path = tmp_path / "model.bin"
    save_checkpoint(path, random_checkpoint(SMALL))
    data = path.read_bytes()
    expected = len(data)
    path.write_bytes(data[:expected + change] if change < 0 else data + b"\x00" * change)
    with pytest.raises(CheckpointError, match=f"{expected + change} bytes, but the header .* needs {expected} "
                                              fr"\({file_floats(SMALL)} float32 weights after the header\)"):
        load_checkpoint(path)


def test_short_header(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="10 bytes is shorter than the 28-byte header"):
        load_checkpoint(path)


def test_impossible_header(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(struct.pack("<7i", 16, 24, 2, 3, 3, 32, 8))
    with pytest.raises(CheckpointError, match="dim 16 is not n_heads 3 heads of an even size"):
        load_checkpoint(path)


def test_save_rejects_wrong_shapes(tmp_path):
    checkpoint = random_checkpoint(SMALL)
    bad = replace(checkpoint, weights=replace(checkpoint.weights, w1=np.zeros((2, 23, 16), np.float32)))
    with pytest.raises(CheckpointError, match=r"weight w1: shape \(2, 23, 16\), the config needs \(2, 24, 16\)"):
        save_checkpoint(tmp_path / "model.bin", bad)
