"""Obviously-correct pure-Python BytePiece, written from BYTEPIECE.md sections 1-2.

Slow on purpose: plain dicts, slices and loops, no trie, no Numba, nothing
shared with ``gpu_bytepiece``. The CPU tokenizer (and through it the GPU one)
is checked against these functions exactly, and these against the reference
``bytepiece==0.6.3``.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import unicodedata

import numpy as np

SPECIALS = ("<pad>", "<bos>", "<eos>")

# Tokenizing segments: a maximal run of non-newline characters followed by its
# whole run of newlines. On bytes, ``.`` matches every byte but ``\n``.
_SEGMENT = re.compile(rb".*\n+|.+")


class Vocab:
    """A model as plain dicts: ``piece -> id``, ``piece -> score``."""

    def __init__(self, pieces_counts_ids):
        """``pieces_counts_ids``: iterable of ``(piece bytes, count, id)``."""
        triples = list(pieces_counts_ids)
        total = sum(c for _, c, _ in triples)
        # As the reference computes it: np.log of Python ints, in float64.
        log_total = np.log(total)
        self.id = {p: i for p, _, i in triples}
        self.score = {p: float(np.log(c) - log_total) for p, c, _ in triples}
        self.piece = {i: p for p, _, i in triples}
        self.max_len = max(len(p) for p, _, _ in triples)
        self.vocab_size = len(triples) + 3


@functools.lru_cache(maxsize=None)
def load_vocab(path) -> Vocab:
    """Read a plain JSON BytePiece model file."""
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    return Vocab((base64.b64decode(k), v[2], v[0]) for k, v in obj.items())


def normalize(text) -> bytes:
    """NFC UTF-8 bytes of ``text``.

    ``str``: NFC then UTF-8. ``bytes``: each maximal valid UTF-8 run is NFC'd,
    each byte that is not valid UTF-8 is kept as it is, in place.
    """
    if isinstance(text, str):
        return unicodedata.normalize("NFC", text).encode("utf-8")
    data = bytes(text)
    out = []
    while data:
        try:
            run = data.decode("utf-8")
        except UnicodeDecodeError as e:
            out.append(unicodedata.normalize("NFC", data[: e.start].decode("utf-8")).encode("utf-8"))
            out.append(data[e.start : e.end])  # the invalid bytes, verbatim
            data = data[e.end :]
        else:
            out.append(unicodedata.normalize("NFC", run).encode("utf-8"))
            data = b""
    return b"".join(out)


def segments(data: bytes) -> list:
    """``re.findall(rb'.*\\n+|.+', data)``: the segments, tokenized on their own."""
    return _SEGMENT.findall(data)


def matches(seg: bytes, vocab: Vocab) -> list:
    """``out[e]`` = ``[(s, id), ...]`` for every piece ``seg[s:e]``, increasing ``s``.

    Increasing ``s`` is longest first: the order BytePiece's automaton reports them.
    """
    out = [[] for _ in range(len(seg) + 1)]
    for e in range(1, len(seg) + 1):
        for s in range(max(0, e - vocab.max_len), e):
            i = vocab.id.get(seg[s:e])
            if i is not None:
                out[e].append((s, i))
    return out


def viterbi(seg: bytes, vocab: Vocab) -> list:
    """Ids of the best segmentation of one segment (BYTEPIECE.md section 2)."""
    n = len(seg)
    best = [0.0] + [-math.inf] * n
    back = list(range(n + 1))
    for e in range(1, n + 1):
        for s in range(max(0, e - vocab.max_len), e):  # longest piece first
            p = seg[s:e]
            if p in vocab.score:
                cand = best[s] + vocab.score[p]
                if cand > best[e]:  # strict: on a tie the longer piece stays
                    best[e] = cand
                    back[e] = s
    ids = []
    e = n
    while e > 0:
        s = back[e]
        ids.append(vocab.id[seg[s:e]])
        e = s
    return ids[::-1]


def encode(text, vocab: Vocab, add_bos: bool = False, add_eos: bool = False) -> list:
    """Ids of a whole text: normalize, cut into segments, Viterbi each."""
    ids = [1] if add_bos else []
    for seg in segments(normalize(text)):
        ids += viterbi(seg, vocab)
    if add_eos:
        ids.append(2)
    return ids


def segmentations(seg: bytes, vocab: Vocab) -> dict:
    """Every segmentation of ``seg`` into pieces: ``tuple(ids) -> total score``.

    Exponential; for sampling tests on a handful of bytes only.
    """
    if not seg:
        return {(): 0.0}
    out = {}
    for e in range(1, min(len(seg), vocab.max_len) + 1):
        p = seg[:e]
        if p in vocab.score:
            for rest, v in segmentations(seg[e:], vocab).items():
                out[(vocab.id[p],) + rest] = vocab.score[p] + v
    return out


def sample_distribution(seg: bytes, vocab: Vocab, alpha: float) -> dict:
    """Exact law of a sampled segmentation: ``P(ids) ~ exp(alpha * score(ids))``."""
    segs = segmentations(seg, vocab)
    top = max(alpha * v for v in segs.values())
    w = {k: math.exp(alpha * v - top) for k, v in segs.items()}
    z = sum(w.values())
    return {k: x / z for k, x in w.items()}
