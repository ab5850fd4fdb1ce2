"""Where each token came from: byte spans in the packed text, character
offsets in the caller's string.

Byte spans (``encode_to_numpy(..., return_spans=True)``) are ``[start, end)``
in the document as packed: its NFC UTF-8 (with allowed special tokens, the
NFC of each run between them, and the specials' own UTF-8). A token's span is
its piece's length after the previous token's end; ``<bos>``/``<eos>`` are
empty spans at the document's start and end.

Character offsets (``Tokenizer.encode_with_offsets``) map those bytes back to
the caller's ``str``, as Hugging Face's ``return_offsets_mapping`` does:

- a token made of whole characters covers exactly them;
- a token that starts or ends inside a character (a byte piece of a
  multi-byte character) is widened to that whole character, so the tokens of
  one character all get that character's offsets;
- where NFC changed the text, Hugging Face's alignment rule: a character
  NFC composed (``i`` + U+0308 -> ``ï``) maps to the first character it came
  from (the marks it absorbed are covered by no token); the parts of one
  decomposed character (U+0958 -> U+0915 U+093C) all map to it; reordered
  combining marks map in output order to the input positions;
- ``<bos>``/``<eos>`` get ``(0, 0)``, as special tokens added by a HF
  post-processor do.
"""

from __future__ import annotations

import unicodedata

import numpy as np

__all__ = ["token_spans", "nfc_alignment", "char_offsets"]


def token_spans(ids: np.ndarray, offsets: np.ndarray, piece_len: np.ndarray) -> np.ndarray:
    """``int64[len(ids), 2]`` byte ``[start, end)`` of each token in its document."""
    lens = piece_len[ids.astype(np.int64)] if len(ids) else np.zeros(0, np.int64)
    cum = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lens, out=cum[1:])
    base = np.repeat(cum[offsets[:-1]], np.diff(offsets))
    spans = np.empty((len(ids), 2), dtype=np.int64)
    spans[:, 0] = cum[:-1] - base
    spans[:, 1] = cum[1:] - base
    return spans


def _nfc_with_changes(text: str) -> list:
    """NFC as ``(char, change)`` pairs, the way HF's normalizer tracks it:
    ``0`` replaces one input character, ``+1`` is inserted after the
    previous one, ``-n`` replaces one and removes the ``n`` after it."""
    seq = []
    for ch in text:  # canonical decomposition: the first part replaces, the others are inserted
        d = unicodedata.normalize("NFD", ch)
        seq.append((d[0], 0))
        seq.extend((c, 1) for c in d[1:])
    i = 0  # canonical order: stable sort of each run of combining marks (the changes move along)
    while i < len(seq):
        j = i
        while j < len(seq) and unicodedata.combining(seq[j][0]):
            j += 1
        if j - i > 1:
            seq[i:j] = sorted(seq[i:j], key=lambda t: unicodedata.combining(t[0]))
        i = j + 1
    out: list = []
    starter, last_ccc = None, None  # last starter in out; ccc of the last mark after it
    for ch, change in seq:  # canonical composition
        ccc = unicodedata.combining(ch)
        if starter is not None and (last_ccc is None or last_ccc < ccc):
            composed = unicodedata.normalize("NFC", out[starter][0] + ch)
            if len(composed) == 1:
                out[starter] = (composed, out[starter][1] + change - 1)
                continue
        if ccc == 0:
            starter, last_ccc = len(out), None
        else:
            last_ccc = ccc
        out.append((ch, change))
    return out


def nfc_alignment(text: str) -> tuple[str, list, list]:
    """``(nfc, starts, ends)``: NFC of ``text`` and, for each of its characters,
    the ``[start, end)`` in ``text`` it maps to (see the module notes)."""
    if unicodedata.is_normalized("NFC", text):
        n = len(text)
        return text, list(range(n)), list(range(1, n + 1))
    chars, where = [], []
    pos = 0  # next input character
    for ch, change in _nfc_with_changes(text):
        chars.append(ch)
        if change > 0:
            where.append(max(pos - 1, 0))
        else:
            where.append(pos)
            pos += 1 - change
    nfc = "".join(chars)
    if nfc != unicodedata.normalize("NFC", text):  # pragma: no cover - a composition this misses
        nfc = unicodedata.normalize("NFC", text)
        return nfc, [0] * len(nfc), [len(text)] * len(nfc)
    return nfc, where, [w + 1 for w in where]


def char_offsets(text: str, runs: list, spans: np.ndarray) -> list:
    """Character ``(start, end)`` in ``text`` of each token.

    ``runs``: the document as packed, ``(start, end, is_special)`` character
    ranges of ``text`` in order (text runs are NFC-normalized alone, specials
    kept); ``spans``: the tokens' byte spans in that packing.
    """
    byte_start, byte_end = [], []  # per packed byte: the caller's characters it came from
    for a, b, special in runs:
        if special:
            nfc, starts, ends = text[a:b], list(range(b - a)), list(range(1, b - a + 1))
        else:
            nfc, starts, ends = nfc_alignment(text[a:b])
        for ch, s, e in zip(nfc, starts, ends):
            n = len(ch.encode("utf-8"))
            byte_start.extend([a + s] * n)
            byte_end.extend([a + e] * n)
    byte_start = np.array(byte_start + [len(text)], dtype=np.int64)
    byte_end = np.array([0] + byte_end, dtype=np.int64)
    s, e = spans[:, 0], spans[:, 1]
    empty = e == s
    cs = np.where(empty, 0, byte_start[s])
    ce = np.where(empty, 0, byte_end[e])
    return list(zip(cs.tolist(), ce.tolist()))
