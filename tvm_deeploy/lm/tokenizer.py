"""llama2.c tokenizers (`tokenizer.bin`): byte-pair pieces with merge scores, and a trainer for them.

The file is a little-endian int32 max_token_length, then for every token in id order a float32 score, an
int32 byte length and the piece's bytes. Ids 0, 1, 2 are "<unk>", BOS "\\n<s>\\n" and EOS "\\n</s>\\n";
ids 3..258 are the byte-fallback pieces "<0x00>".."<0xFF>" (a character without a piece of its own is
spelled by its UTF-8 bytes); then the learned pieces, a word's leading space being a plain " ".

Encoding follows llama2.c's run.c: a space is put before non-empty text (so the first word looks like any
other word), every character becomes its piece or its bytes, then the adjacent pair whose concatenation is
a piece with the highest score merges, the leftmost among equals, until no pair does.
"""

from __future__ import annotations

import heapq
import re
import struct
from collections import Counter
from pathlib import Path

UNK, BOS, EOS = 0, 1, 2
FIRST_BYTE = 3  # the id of "<0x00>"
CONTROL_PIECES = [b"<unk>", b"\n<s>\n", b"\n</s>\n"]
BYTE_PIECES = [f"<0x{b:02X}>".encode() for b in range(256)]
N_RESERVED = len(CONTROL_PIECES) + len(BYTE_PIECES)
NO_MERGE_SCORE = -1e10  # run.c never merges into a piece scored at or below this

# Training splits text into a leading space plus a run of word characters or of other symbols, or one
# whitespace character: pieces never span two words, like SentencePiece's.
_PRETOKEN = re.compile(r" ?\w+| ?[^\w\s]+|\s")


class TokenizerError(ValueError):
    """Not a tokenizer this package can read, or a request it cannot serve."""


class Tokenizer:
    def __init__(self, pieces: list[bytes], scores: list[float]):
        if len(pieces) != len(scores):
            raise TokenizerError(f"{len(pieces)} pieces but {len(scores)} scores")
        if len(pieces) < N_RESERVED:
            raise TokenizerError(f"{len(pieces)} tokens, fewer than the {N_RESERVED} control and byte tokens")
        for b, piece in enumerate(BYTE_PIECES):
            if pieces[FIRST_BYTE + b] != piece:
                raise TokenizerError(f"token {FIRST_BYTE + b} is {pieces[FIRST_BYTE + b]!r}, expected the byte "
                                     f"piece {piece!r}")
        self.pieces = [bytes(p) for p in pieces]
        self.scores = [struct.unpack("<f", struct.pack("<f", s))[0] for s in scores]  # as stored: float32
        self._ids: dict[bytes, int] = {}
        for i, piece in enumerate(self.pieces):
            self._ids.setdefault(piece, i)

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    @classmethod
    def load(cls, path) -> Tokenizer:
        data = Path(path).read_bytes()
        if len(data) < 4:
            raise TokenizerError(f"{path}: {len(data)} bytes, shorter than the 4-byte max_token_length")
        (max_length,) = struct.unpack_from("<i", data)
        if max_length <= 0:
            raise TokenizerError(f"{path}: max_token_length {max_length} is not positive")
        pieces, scores, offset = [], [], 4
        while offset < len(data):
            if offset + 8 > len(data):
                raise TokenizerError(f"{path}: token {len(pieces)} is cut off: its score and length need bytes "
                                     f"{offset}..{offset + 8}, the file has {len(data)}")
            score, length = struct.unpack_from("<fi", data, offset)
            offset += 8
            if not 0 <= length <= max_length:
                raise TokenizerError(f"{path}: token {len(pieces)} has length {length}, outside 0.."
                                     f"{max_length} (max_token_length)")
            if offset + length > len(data):
                raise TokenizerError(f"{path}: token {len(pieces)} is cut off: its {length} bytes end at "
                                     f"{offset + length}, the file has {len(data)}")
            pieces.append(data[offset:offset + length])
            scores.append(score)
            offset += length
        try:
            return cls(pieces, scores)
        except TokenizerError as e:
            raise TokenizerError(f"{path}: {e}") from None

    def save(self, path) -> None:
        records = [struct.pack("<fi", score, len(piece)) + piece for piece, score in zip(self.pieces, self.scores)]
        max_length = max(len(piece) for piece in self.pieces)
        Path(path).write_bytes(struct.pack("<i", max_length) + b"".join(records))

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        ids = [BOS] if bos else []
        if text:
            symbols = []
            for char in " " + text:
                utf8 = char.encode()
                piece_id = self._ids.get(utf8)
                symbols += [piece_id] if piece_id is not None else [FIRST_BYTE + b for b in utf8]
            ids += self._merge(symbols)
        return ids + [EOS] if eos else ids

    def _merge(self, ids: list[int]) -> list[int]:
        """run.c's loop (merge the best pair, rescan) with the candidate pairs in a heap keyed by
        (-score, position): the same merges in the same order, in n log n rather than n^2."""
        n = len(ids)
        ids, following, preceding, alive = list(ids), list(range(1, n + 1)), list(range(-1, n - 1)), [True] * n
        heap = []

        def offer(left):
            right = following[left]
            if right < n:
                merged = self._ids.get(self.pieces[ids[left]] + self.pieces[ids[right]])
                if merged is not None and self.scores[merged] > NO_MERGE_SCORE:
                    heapq.heappush(heap, (-self.scores[merged], left, ids[left], ids[right], merged))

        for left in range(n - 1):
            offer(left)
        while heap:
            _, left, left_id, right_id, merged = heapq.heappop(heap)
            right = following[left]
            # Stale when either side has merged since: a merge changes the ids at its position.
            if not alive[left] or right >= n or (ids[left], ids[right]) != (left_id, right_id):
                continue
            ids[left], alive[right] = merged, False
            following[left] = following[right]
            if following[left] < n:
                preceding[following[left]] = left
            offer(left)
            if preceding[left] >= 0:
                offer(preceding[left])
        return [token for token, kept in zip(ids, alive) if kept]

    def decode_token(self, prev: int, token: int) -> bytes:
        """The bytes `token` adds to the text after `prev` (run.c's decode): BOS and EOS add nothing, the
        first piece after BOS drops the space encode put before the text, byte pieces are their byte."""
        if not 0 <= token < len(self.pieces):
            raise TokenizerError(f"token id {token} is outside the vocabulary of {len(self.pieces)}")
        if token in (BOS, EOS):
            return b""
        if FIRST_BYTE <= token < N_RESERVED:
            return bytes([token - FIRST_BYTE])
        piece = self.pieces[token]
        return piece[1:] if prev == BOS and piece.startswith(b" ") else piece

    def decode(self, ids: list[int]) -> str:
        text = b"".join(self.decode_token(prev, token) for prev, token in zip([-1] + list(ids), ids))
        return text.decode("utf-8", errors="replace")


def train_bpe(text: str, vocab_size: int) -> Tokenizer:
    """Byte-pair encoding learned from `text`: every character of the text (and the space) becomes a piece,
    then the most frequent adjacent pair within a word merges, ties to the smaller pair, until the
    vocabulary is full or nothing is left to merge. A piece's score is minus its merge rank, so that
    encode applies earlier merges first; the characters come last."""
    chars = sorted(set(text) | {" "})
    room = vocab_size - N_RESERVED
    if len(chars) > room:
        raise TokenizerError(f"vocab_size {vocab_size} leaves room for {room} pieces after the control and "
                             f"byte tokens, but the text has {len(chars)} distinct characters")
    word_counts = Counter(_PRETOKEN.findall(text))
    splits = {word: list(word) for word in word_counts}
    merged_pieces: list[str] = []
    known = set(chars)
    while len(chars) + len(merged_pieces) < room:
        pair_counts = Counter()
        for word, symbols in splits.items():
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] += word_counts[word]
        if not pair_counts:
            break
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        joined = best[0] + best[1]
        splits = {word: _merge_pair(symbols, best, joined) for word, symbols in splits.items()}
        if joined not in known:  # two different pairs can spell the same piece
            merged_pieces.append(joined)
            known.add(joined)
    learned = merged_pieces + chars
    return Tokenizer(CONTROL_PIECES + BYTE_PIECES + [p.encode() for p in learned],
                     [0.0] * N_RESERVED + [-float(rank) for rank in range(len(learned))])


def _merge_pair(symbols: list[str], pair: tuple[str, str], joined: str) -> list[str]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(joined)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out
