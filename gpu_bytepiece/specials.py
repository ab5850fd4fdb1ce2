"""Special tokens in tiktoken's explicit style: found in the text only when allowed.

A :class:`~gpu_bytepiece.Tokenizer` built with ``special_tokens=["<|endoftext|>", ...]``
gives those strings the ids ``vocab_size, vocab_size + 1, ...`` of the model
(in order). Encoding then takes two sets:

- ``allowed_special``: the specials matched in the text and emitted as their
  ids; the text between them is tokenized as usual, each run on its own
  (NFC-normalized on its own too), exactly as Hugging Face's added tokens
  split a text before normalization.
- ``disallowed_special`` (default ``"all"``: every special not allowed): a
  document holding one raises :class:`ValueError` naming the document, so
  that a special never enters a corpus by accident. ``()`` encodes such text
  as ordinary text.

BytePiece's own ``<pad>``/``<bos>``/``<eos>`` (ids 0-2) are not specials in
this sense: ``add_bos``/``add_eos`` insert them, the text never does.

This module is text-level work only (matching, splitting, re-joining the
ids); the tokenizer calls it around its ordinary encode.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["SpecialTokens", "RESERVED"]

#: BytePiece's reserved pieces (ids 0-2); never special tokens.
RESERVED = ("<pad>", "<bos>", "<eos>")


def _docs_list(texts) -> list:
    """The documents as a list (a pyarrow array becomes Python objects)."""
    if isinstance(texts, (str, bytes, bytearray, memoryview)):
        return [texts]
    if type(texts).__module__.startswith("pyarrow"):
        return texts.to_pylist()
    return texts if isinstance(texts, list) else list(texts)


class SpecialTokens:
    """The special tokens of one tokenizer and their ids.

    Parameters
    ----------
    tokens : sequence of str, optional
        The specials, in id order.
    first_id : int
        Id of the first (the model's vocabulary size).
    """

    def __init__(self, tokens, first_id: int):
        if isinstance(tokens, (str, bytes)):
            raise TypeError("special_tokens must be a list of strings, not one string")
        tokens = tuple(tokens or ())
        for t in tokens:
            if not isinstance(t, str) or not t:
                raise ValueError(f"a special token must be a non-empty str, got {t!r}")
            if t in RESERVED:
                raise ValueError(f"{t!r} is BytePiece's own id {RESERVED.index(t)} (add_bos/add_eos "
                                 "insert it); it cannot be a special token")
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"special token {t!r} has no UTF-8 encoding") from None
        dup = sorted({t for t in tokens if tokens.count(t) > 1})
        if dup:
            raise ValueError(f"duplicate special tokens: {dup}")
        self.tokens = tokens
        self.first_id = int(first_id)
        self.ids = {t: self.first_id + i for i, t in enumerate(tokens)}
        self._by_bytes = {t.encode("utf-8"): i for t, i in self.ids.items()}
        self._patterns: dict = {}

    def __len__(self) -> int:
        return len(self.tokens)

    def resolve(self, allowed_special, disallowed_special) -> tuple[frozenset, frozenset]:
        """``(allowed, disallowed)`` as sets of specials (tiktoken's rules).

        ``"all"`` allowed: every special; ``"all"`` disallowed: every special
        not allowed. Unknown names raise ``ValueError``.
        """
        allowed = self._as_set(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = frozenset(self.tokens) - allowed
        else:
            disallowed = self._as_set(disallowed_special, "disallowed_special")
        return allowed, disallowed

    def _as_set(self, value, name) -> frozenset:
        if value == "all":
            return frozenset(self.tokens)
        if isinstance(value, str):
            raise TypeError(f"{name} must be 'all' or a set of strings, got the string {value!r}")
        out = frozenset(value or ())
        unknown = sorted(out - set(self.tokens))
        if unknown:
            known = list(self.tokens) or "none"
            raise ValueError(f"{name}: {unknown} are not special tokens of this tokenizer (its specials: {known})")
        return out

    def _pattern(self, names: frozenset, binary: bool):
        key = (names, binary)
        pat = self._patterns.get(key)
        if pat is None:
            # longest first, so that a special holding another wins (as HF's trie does)
            alts = sorted(names, key=lambda t: (-len(t.encode()), t))
            if binary:
                pat = re.compile(b"|".join(re.escape(t.encode()) for t in alts))
            else:
                pat = re.compile("|".join(re.escape(t) for t in alts))
            self._patterns[key] = pat
        return pat

    def finditer(self, doc, names: frozenset):
        """Matches of the specials ``names`` in one document (str or bytes)."""
        binary = not isinstance(doc, str)
        if binary:
            doc = bytes(doc)
        return self._pattern(names, binary).finditer(doc)

    def runs(self, text: str, allowed: frozenset) -> list:
        """``[(start, end, is_special)]``: ``text`` cut into the allowed
        specials found in it and the runs of ordinary text between them."""
        runs, pos = [], 0
        for m in (self.finditer(text, allowed) if allowed else ()):
            if m.start() > pos:
                runs.append((pos, m.start(), False))
            runs.append((m.start(), m.end(), True))
            pos = m.end()
        if pos < len(text):
            runs.append((pos, len(text), False))
        return runs

    def check(self, texts, disallowed: frozenset) -> list:
        """The documents as a list; ``ValueError`` if one holds a disallowed special."""
        docs = _docs_list(texts)
        for i, doc in enumerate(docs):
            if not isinstance(doc, (str, bytes, bytearray, memoryview)):
                continue  # the packer names the bad type
            m = next(iter(self.finditer(doc, disallowed)), None)
            if m is not None:
                found = m.group(0)
                found = found if isinstance(found, str) else found.decode("utf-8")
                raise ValueError(
                    f"text {i} contains the special token {found!r} at {'character' if isinstance(doc, str) else 'byte'} "
                    f"{m.start()}: pass allowed_special={{{found!r}}} (or 'all') to encode it as its id "
                    f"{self.ids[found]}, or disallowed_special=() to encode it as ordinary text")
        return docs

    def split(self, texts, allowed: frozenset) -> tuple[list, "SplitPlan"]:
        """Cut every document at the allowed specials.

        Returns the text runs between them (the documents to tokenize, empty
        runs left out) and the plan that puts the ids back together.
        """
        docs = _docs_list(texts)
        parts: list = []
        units: list = []  # per unit: >= 0 a part index, < 0 a special id as -(id + 1)
        doc_units = np.zeros(len(docs) + 1, dtype=np.int64)
        for i, doc in enumerate(docs):
            if not isinstance(doc, (str, bytes, bytearray, memoryview)):
                parts.append(doc)  # the packer raises, naming its type
                units.append(len(parts) - 1)
                doc_units[i + 1] = len(units)
                continue
            binary = not isinstance(doc, str)
            if binary:
                doc = bytes(doc)
            pos = 0
            for m in self.finditer(doc, allowed):
                if m.start() > pos:
                    parts.append(doc[pos:m.start()])
                    units.append(len(parts) - 1)
                    pos = m.start()
                sid = self._by_bytes[m.group(0)] if binary else self.ids[m.group(0)]
                units.append(-(sid + 1))
                pos = m.end()
            if pos < len(doc):
                parts.append(doc[pos:])
                units.append(len(parts) - 1)
            doc_units[i + 1] = len(units)
        return parts, SplitPlan(np.array(units, dtype=np.int64), doc_units)


class SplitPlan:
    """How the ids of the text runs and the specials make up each document."""

    def __init__(self, units: np.ndarray, doc_units: np.ndarray):
        self.units = units
        self.doc_units = doc_units

    def join(self, part_ids: np.ndarray, part_offsets: np.ndarray, add_bos: bool, add_eos: bool):
        """Flat ids and document offsets, one slot left before/after each
        document for ``<bos>``/``<eos>`` when asked (the caller fills them)."""
        units = self.units
        is_part = units >= 0
        unit_len = np.ones(len(units), dtype=np.int64)
        unit_len[is_part] = np.diff(part_offsets)[units[is_part]]
        unit_cum = np.zeros(len(units) + 1, dtype=np.int64)
        np.cumsum(unit_len, out=unit_cum[1:])
        extra = int(add_bos) + int(add_eos)
        n_docs = len(self.doc_units) - 1
        offsets = unit_cum[self.doc_units] + extra * np.arange(n_docs + 1, dtype=np.int64)
        ids = np.empty(int(offsets[-1]), dtype=np.uint32)
        # where each unit's ids go: its place among the units + the bos/eos slots before it
        doc_of_unit = np.repeat(np.arange(n_docs, dtype=np.int64), np.diff(self.doc_units))
        dest = unit_cum[:-1] + doc_of_unit * extra + int(add_bos)
        specials = ~is_part
        ids[dest[specials]] = (-units[specials] - 1).astype(np.uint32)
        pidx = np.flatnonzero(is_part)
        if len(pidx):
            starts = part_offsets[units[pidx]]
            lens = unit_len[pidx]
            src = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens - starts, lens)
            dst = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens - dest[pidx], lens)
            ids[dst] = part_ids[src]
        return ids, offsets
