"""The training texts as packed NFC UTF-8 batches, once per counting pass."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ..text import TextError, iter_packed

__all__ = ["Corpus", "ChangedInput", "batch_hash"]


class ChangedInput(RuntimeError):
    """The texts differ from those a checkpoint (or the first pass) counted."""


def batch_hash(data, offsets) -> str:
    """Content hash of a packed batch (its document offsets and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(offsets).data)
    h.update(np.ascontiguousarray(data).data)
    return h.hexdigest()


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

    Every batch gets a content hash (``hashes``); a pass can skip the
    batches a checkpoint already counted (``skip``), checking that they are
    the batches it counted (:class:`ChangedInput` otherwise), and the second
    pass checks every batch against the first pass's hashes.

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
        self.size_hint = None  # input bytes expected, when known (progress bars)
        self.hashes = []  # per batch of the first pass
        self._base = (0, 0, 0)  # batches, bytes, documents restored from a checkpoint
        self._sizes = []  # (bytes, documents) of each batch read since
        self.index = -1  # the batch last yielded

    def _pack(self, it):
        for _, data, offsets in iter_packed(_only_str(it), self.batch_bytes):
            if offsets.shape[0] > 1:  # iter_packed yields one empty batch for no documents
                yield data, offsets

    def restore(self, state):
        """Continue after a checkpoint of the first pass (:meth:`state`)."""
        self.hashes = list(state["hashes"])
        self.total_bytes = state["total_bytes"]
        self.n_docs = state["n_docs"]
        self.spill_index = [tuple(x) for x in state.get("spill_index", [])]
        self._base = (len(self.hashes), self.total_bytes, self.n_docs)
        self._sizes = []

    def state(self, batches=None) -> dict:
        """What a checkpoint needs to continue: hashes, totals, the spill's index.

        ``batches``: of the first that many batches only (the pass may have
        read further ahead than it counted, as on Ray); default all read.
        """
        n0, bytes0, docs0 = self._base
        k = len(self.hashes) if batches is None else batches
        tail = self._sizes[:k - n0]
        return {"hashes": list(self.hashes[:k]), "total_bytes": bytes0 + sum(b for b, _ in tail),
                "n_docs": docs0 + sum(d for _, d in tail), "spill_index": [list(x) for x in self.spill_index[:k]]}

    def _open_spill(self, done):
        path = os.path.join(self.tmp(), "texts.bin")
        if done:
            self.spill_index = self.spill_index[:done]
            end = self.spill_index[-1][0] + 8 * self.spill_index[-1][1] + self.spill_index[-1][2]
            self.spill = open(path, "r+b")
            self.spill.truncate(end)
            self.spill.seek(end)
        else:
            self.spill_index = []
            self.spill = open(path, "w+b")

    def _check(self, i, h, what):
        if i >= len(self.hashes):
            raise ChangedInput(f"the texts changed {what}: they hold more batches than the {len(self.hashes)} "
                               "counted")
        if self.hashes[i] != h:
            raise ChangedInput(f"the texts changed {what}: batch {i} (of {self.batch_bytes} bytes each) differs")

    def first_pass(self, skip=0):
        """``(data, offsets)`` batches; counts documents and bytes (``last_bytes``: the batch's).

        The first ``skip`` batches (counted before a checkpoint restored with
        :meth:`restore`) are read and checked, not yielded.
        """
        it, self.first_iter = self.first_iter, None
        if self.one_shot:
            self._open_spill(skip)
        self.hashes = self.hashes[:skip]
        self.index = -1
        for data, offsets in self._pack(it):
            self.index += 1
            h = batch_hash(data, offsets)
            if self.index < skip:
                self._check(self.index, h, "since the checkpoint")
                continue
            self.hashes.append(h)
            self.last_bytes = int(data.shape[0])
            self.total_bytes += self.last_bytes
            self.n_docs += int(offsets.shape[0] - 1)
            self._sizes.append((self.last_bytes, int(offsets.shape[0] - 1)))
            if self.spill is not None:
                pos = self.spill.tell()
                self.spill.write(offsets.tobytes())
                self.spill.write(data.tobytes())
                self.spill_index.append((pos, int(offsets.shape[0]), int(data.shape[0])))
            yield data, offsets
        if self.index + 1 < skip:
            raise ChangedInput(f"the texts changed since the checkpoint: {self.index + 1} batches, "
                               f"{skip} counted before")

    def second_pass(self, skip=0):
        """The same batches again (from the spill, or by iterating ``texts`` anew), from batch ``skip``."""
        self.index = -1
        if self.one_shot:
            if self.spill is None:
                self.spill = open(os.path.join(self.tmp(), "texts.bin"), "rb")
            self.spill.flush()
            for pos, n_off, n_data in self.spill_index:
                self.index += 1
                if self.index < skip:
                    continue
                offsets = np.fromfile(self.spill.name, dtype=np.int64, count=n_off, offset=pos)
                data = np.fromfile(self.spill.name, dtype=np.uint8, count=n_data, offset=pos + 8 * n_off)
                self.last_bytes = n_data
                yield data, offsets
            return
        for data, offsets in self._pack(iter(self.texts)):
            self.index += 1
            self._check(self.index, batch_hash(data, offsets), "between the two passes")
            if self.index < skip:
                continue
            self.last_bytes = int(data.shape[0])
            yield data, offsets
        if self.index + 1 != len(self.hashes):
            raise ChangedInput(
                f"the texts changed between the two passes ({len(self.hashes)} batches, then {self.index + 1}): "
                "pass a re-iterable that yields the same texts each time, or an iterator (read once)")

    def numbered(self, batches):
        """``(index, nbytes, (data, offsets))`` for each batch a pass yields (what
        :meth:`.checkpoint.PassCheckpoints.run` reads)."""
        for data, offsets in batches:
            yield self.index, self.last_bytes, (data, offsets)

    def close(self):
        if self.spill is not None:
            self.spill.close()
            self.spill = None
