"""tokenizer: llama2.c tokenizer.bin files, run.c's encode and decode, and the BPE trainer."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tvm_deeploy
from tvm_deeploy.lm.tokenizer import BOS, EOS, FIRST_BYTE, N_RESERVED, Tokenizer, TokenizerError, train_bpe

SHIPPED = Path(tvm_deeploy.__file__).parent / "data" / "tok512.bin"

# Pairs by count in "the cat the hat the": (h,e) 3 and (t,h) 3, the smaller first; then (t,he) 3; then
# (" ",the) 2 before (a,t) 2. So the learned pieces are he, the, " the", at, then the characters.
TINY_TEXT = "the cat the hat the"
TINY = train_bpe(TINY_TEXT, N_RESERVED + 6 + 4)
HE, THE, SPACE_THE, AT, SPACE, A, C, E, H, T = range(N_RESERVED, N_RESERVED + 10)
SAMPLE = TINY_TEXT + " Once upon a time, Lily said: \"héllo, 世界!\"\n"
TRAINED = train_bpe(SAMPLE * 3, 300)


def run_c_encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """run.c's encode as written there (no BOS): pieces or bytes per character, then rescan for the best
    pair (the leftmost of equals), merge it, repeat."""
    lookup = {}
    for i, piece in enumerate(tokenizer.pieces):
        lookup.setdefault(piece, i)
    ids = []
    for char in (" " + text if text else ""):
        utf8 = char.encode()
        ids += [lookup[utf8]] if utf8 in lookup else [FIRST_BYTE + b for b in utf8]
    while True:
        best = None
        for i in range(len(ids) - 1):
            merged = lookup.get(tokenizer.pieces[ids[i]] + tokenizer.pieces[ids[i + 1]])
            if merged is not None and (best is None or tokenizer.scores[merged] > best[0]):
                best = (tokenizer.scores[merged], i, merged)
        if best is None:
            return ids
        _, i, merged = best
        ids[i:i + 2] = [merged]


def test_tiny_trained_pieces_and_scores():
    learned = TINY.pieces[N_RESERVED:]
    assert learned == [b"he", b"the", b" the", b"at", b" ", b"a", b"c", b"e", b"h", b"t"]
    assert TINY.scores[N_RESERVED:] == [-float(rank) for rank in range(10)]
    assert TINY.scores[:N_RESERVED] == [0.0] * N_RESERVED


def test_known_encodings():
    assert TINY.encode("the cat") == [BOS, SPACE_THE, SPACE, C, AT]
    assert TINY.encode("the cat", bos=False, eos=True) == [SPACE_THE, SPACE, C, AT, EOS]
    assert TINY.encode("") == [BOS]
    # é is no piece: its two UTF-8 bytes are byte-fallback tokens.
    assert TINY.encode("té") == [BOS, SPACE, T, FIRST_BYTE + 0xC3, FIRST_BYTE + 0xA9]


def test_equal_scores_merge_leftmost():
    tokenizer = train_bpe("aaaa", N_RESERVED + 3)
    assert tokenizer.pieces[N_RESERVED:] == [b"aa", b" ", b"a"]
    assert tokenizer.encode("aaa") == [BOS, N_RESERVED + 1, N_RESERVED, N_RESERVED + 2]


def test_decode():
    assert TINY.decode([BOS, SPACE_THE, SPACE, C, AT]) == "the cat"
    assert TINY.decode([SPACE_THE, SPACE, C, AT]) == " the cat"  # only a piece after BOS drops its space
    assert TINY.decode_token(BOS, SPACE_THE) == b"the"
    assert TINY.decode_token(HE, SPACE_THE) == b" the"
    assert TINY.decode_token(SPACE, FIRST_BYTE + 0x41) == b"A"
    assert TINY.decode([BOS, T, EOS, BOS, HE]) == "the"
    assert TINY.decode([BOS, T, FIRST_BYTE + 0xFF, E]) == "t\ufffde"


def test_decode_rejects_unknown_ids():
    with pytest.raises(TokenizerError, match="token id 269 is outside the vocabulary of 269"):
        TINY.decode([BOS, 269])


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_any_text(text):
    for tokenizer in (TINY, TRAINED):
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert all(0 <= i < tokenizer.vocab_size for i in ids)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=sorted(set(SAMPLE)) + ["ß", "\t"], max_size=40))
def test_encode_matches_run_c_loop(text):
    """The heap of candidate pairs merges exactly as run.c's rescanning loop."""
    assert TRAINED.encode(text, bos=False) == run_c_encode(TRAINED, text)


def test_training_errors_when_characters_do_not_fit():
    with pytest.raises(TokenizerError, match="room for 2 pieces after the control and byte tokens, but the text "
                                             "has 4 distinct characters"):
        train_bpe("abc", N_RESERVED + 2)


def test_save_load_identity(tmp_path):
    path = tmp_path / "tok.bin"
    TRAINED.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.pieces == TRAINED.pieces and loaded.scores == TRAINED.scores
    data = path.read_bytes()
    assert struct.unpack_from("<i", data) == (max(len(p) for p in TRAINED.pieces),)
    assert struct.unpack_from("<fi", data, 4) == (0.0, 5) and data[12:17] == b"<unk>"
    loaded.save(tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == data


def _record(piece: bytes, score: float = 0.0) -> bytes:
    return struct.pack("<fi", score, len(piece)) + piece


@pytest.mark.parametrize("data, message", [
    (b"\x01\x00", "2 bytes, shorter than the 4-byte max_token_length"),
    (struct.pack("<i", 0), "max_token_length 0 is not positive"),
    (struct.pack("<i", 8) + _record(b"<unk>") + b"\x00\x00", "token 1 is cut off: its score and length need "
                                                             "bytes 17..25, the file has 19"),
    (struct.pack("<i", 8) + _record(b"<unk>")[:-2], "token 0 is cut off: its 5 bytes end at 17, the file has 15"),
    (struct.pack("<i", 4) + _record(b"<unk>"), r"token 0 has length 5, outside 0..4 \(max_token_length\)"),
    (struct.pack("<i", 8) + struct.pack("<fi", 0.0, -1), r"token 0 has length -1, outside 0..8"),
    (struct.pack("<i", 8) + _record(b"<unk>") * 3, "3 tokens, fewer than the 259 control and byte tokens"),
])
def test_malformed_files(tmp_path, data, message):
    path = tmp_path / "bad.bin"
    path.write_bytes(data)
    with pytest.raises(TokenizerError, match=message):
        Tokenizer.load(path)


def test_byte_pieces_must_be_in_place(tmp_path):
    pieces = list(TINY.pieces)
    pieces[FIRST_BYTE + 0x41] = b"A"
    path = tmp_path / "bad.bin"
    path.write_bytes(struct.pack("<i", 8) + b"".join(_record(p) for p in pieces))
    with pytest.raises(TokenizerError, match=r"bad.bin: token 68 is b'A', expected the byte piece b'<0x41>'"):
        Tokenizer.load(path)


def test_shipped_tokenizer():
    tokenizer = Tokenizer.load(SHIPPED)
    assert tokenizer.vocab_size == 512
    assert tokenizer.pieces[:3] == [b"<unk>", b"\n<s>\n", b"\n</s>\n"]
    text = "Once upon a time, there was a little girl named Lily. She liked to play in the park."
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text) / 2  # common words are single pieces
    assert tokenizer.decode(tokenizer.encode("Zoë 🙂")) == "Zoë 🙂"
