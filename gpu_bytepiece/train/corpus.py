"""The training texts as packed NFC UTF-8 batches, once per counting pass."""

from __future__ import annotations

import os

import numpy as np

from ..text import TextError, iter_packed

__all__ = ["Corpus"]


def _only_str(texts):
    """``texts`` as they come; anything but a ``str`` raises :class:`TextError` naming it."""
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TextError(f"text {i}: expected str, got {type(t).__name__}")
        yield t


class Corpus:
    """Texts as packed NFC UTF-8 batches, twice (once per counting pass).

    Packing is :func:`gpu_bytepiece.text.iter_packed` (the tokenizer's), on
    ``str`` documents only. A re-iterable (list, dataset,
    ``pipeline.InputTexts``) is iterated twice, as the reference does; a
    one-shot iterator (generator, open file) is packed once and its batches
    spilled to ``tmp()`` for the second pass.

    Parameters
    ----------
    texts : iterable of str
    batch_bytes : int
        Batches hold about this many UTF-8 bytes (a document is never split).
    tmp : callable
        Returns the folder for the spill (made on first use).
    """

    def __init__(self, texts, batch_bytes, tmp):
        if isinstance(texts, (str, bytes, bytearray, memoryview)):
            raise TypeError("texts must be an iterable of str (one str per document), "
                            f"not a single {type(texts).__name__}")
        try:
            it = iter(texts)
        except TypeError:
            raise TypeError(f"texts must be an iterable of str, got {type(texts).__name__}") from None
        self.texts = texts
        self.first_iter = it
        self.one_shot = it is texts
        self.batch_bytes = batch_bytes
        self.tmp = tmp
        self.spill = None
        self.spill_index = []
        self.total_bytes = 0
        self.last_bytes = 0
        self.n_docs = 0

    def _pack(self, it):
        for _, data, offsets in iter_packed(_only_str(it), self.batch_bytes):
            if offsets.shape[0] > 1:  # iter_packed yields one empty batch for no documents
                yield data, offsets

    def first_pass(self):
        """``(data, offsets)`` batches; counts documents and bytes (``last_bytes``: the batch's)."""
        it, self.first_iter = self.first_iter, None
        if self.one_shot:
            path = os.path.join(self.tmp(), "texts.bin")
            self.spill = open(path, "w+b")
        for data, offsets in self._pack(it):
            self.last_bytes = int(data.shape[0])
            self.total_bytes += self.last_bytes
            self.n_docs += int(offsets.shape[0] - 1)
            if self.spill is not None:
                pos = self.spill.tell()
                self.spill.write(offsets.tobytes())
                self.spill.write(data.tobytes())
                self.spill_index.append((pos, int(offsets.shape[0]), int(data.shape[0])))
            yield data, offsets

    def second_pass(self):
        """The same batches again (from the spill, or by iterating ``texts`` anew)."""
        if self.spill is not None:
            self.spill.flush()
            for pos, n_off, n_data in self.spill_index:
                offsets = np.fromfile(self.spill.name, dtype=np.int64, count=n_off, offset=pos)
                data = np.fromfile(self.spill.name, dtype=np.uint8, count=n_data, offset=pos + 8 * n_off)
                self.last_bytes = n_data
                yield data, offsets
            return
        total = 0
        for data, offsets in self._pack(iter(self.texts)):
            self.last_bytes = int(data.shape[0])
            total += self.last_bytes
            if total > self.total_bytes:
                break
            yield data, offsets
        if total != self.total_bytes:
            raise RuntimeError(
                f"texts changed between the two passes ({self.total_bytes} then {total} UTF-8 bytes): "
                "pass a re-iterable that yields the same texts each time, or an iterator (read once)")

    def close(self):
        if self.spill is not None:
            self.spill.close()
            self.spill = None
