"""The trainer's file input: :class:`FileTexts`, documents of text, JSONL and Parquet files.

The ``train`` command hands a :class:`FileTexts` to
:class:`~gpu_bytepiece.train.trainer.Trainer` (usable from Python too). It is
kept here alone so that the pipeline's shared readers can replace it in one
place.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os

from .. import config
from ..text import TextError

__all__ = ["FileTexts"]


def _open_text(path):
    low = path.lower()
    if low.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    if low.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8", newline="")
    if low.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8", newline="")
    return open(path, "r", encoding="utf-8", newline="")


def _kind(path):
    low = path.lower()
    for ext in (".gz", ".bz2", ".xz"):
        if low.endswith(ext):
            low = low[: -len(ext)]
    if low.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if low.endswith(".parquet"):
        return "parquet"
    if low.endswith(".txt") or low.endswith(".text"):
        return "txt"
    return None


class FileTexts:
    """Documents of text / JSONL / Parquet files, streamed; iterable many times.

    Parameters
    ----------
    paths : list of str
        Files (``.txt``, ``.jsonl``/``.json``/``.ndjson``, ``.parquet``,
        text and JSONL optionally ``.gz``/``.bz2``/``.xz``).
    text_key : str
        JSON field / Parquet column holding the text.

    Notes
    -----
    A ``.txt`` file is one document, yielded in pieces cut right after a run
    of newlines: training segments never cross such a point (and NFC never
    composes across a newline), so the model is the same as with the whole
    file as one string. Bad records (invalid JSON or UTF-8, a missing or
    non-string text, a null) raise :class:`~gpu_bytepiece.text.TextError`
    naming the file and line or row.
    """

    def __init__(self, paths, text_key="text"):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [os.fspath(p) for p in paths]
        self.text_key = text_key
        for p in self.paths:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{p}: no such file")
            if _kind(p) is None:
                raise ValueError(f"{p}: unknown input type (expected .txt, .jsonl, .json, .ndjson, .parquet, "
                                 "optionally .gz/.bz2/.xz for text and JSONL)")

    def __iter__(self):
        for p in self.paths:
            kind = _kind(p)
            if kind == "txt":
                yield from self._txt(p)
            elif kind == "jsonl":
                yield from self._jsonl(p)
            else:
                yield from self._parquet(p)

    @staticmethod
    def _txt(path):
        carry = ""
        try:
            with _open_text(path) as f:
                while True:
                    chunk = f.read(config.TRAIN_TXT_CHUNK_CHARS)
                    if not chunk:
                        break
                    text = carry + chunk
                    # cut after the last newline run that a non-newline follows
                    i = 0
                    j = text.rfind("\n")
                    while j >= 0:
                        if j + 1 < len(text) and text[j + 1] != "\n":
                            i = j + 1
                            break
                        j = text.rfind("\n", 0, j)
                    if i > 0:
                        yield text[:i]
                        carry = text[i:]
                    else:
                        carry = text
        except UnicodeDecodeError as e:
            raise TextError(f"{path}: not UTF-8 text ({e})") from None
        if carry:
            yield carry

    def _jsonl(self, path):
        key = self.text_key
        try:
            with _open_text(path) as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError as e:
                        raise TextError(f"{path}:{n}: invalid JSON ({e})") from None
                    if not isinstance(obj, dict) or key not in obj:
                        raise TextError(f"{path}:{n}: no {key!r} field (see --text-key)")
                    text = obj[key]
                    if not isinstance(text, str):
                        raise TextError(f"{path}:{n}: {key!r} is {type(text).__name__}, not a string")
                    yield text
        except UnicodeDecodeError as e:
            raise TextError(f"{path}: not UTF-8 ({e})") from None

    def _parquet(self, path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        if self.text_key not in pf.schema_arrow.names:
            raise TextError(f"{path}: no column {self.text_key!r} (columns: {pf.schema_arrow.names}; see --text-key)")
        t = pf.schema_arrow.field(self.text_key).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)
                or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))):
            raise TextError(f"{path}: column {self.text_key!r} is {t}, not a string column")
        row = 0
        for batch in pf.iter_batches(columns=[self.text_key], batch_size=4096):
            col = batch.column(0)
            if col.null_count:
                import numpy as np

                first = int(np.flatnonzero(np.asarray(col.is_null()))[0])
                raise TextError(f"{path}: row {row + first}: null {self.text_key!r}")
            yield from col.to_pylist()
            row += len(col)

    def __repr__(self):
        return f"FileTexts({self.paths!r}, text_key={self.text_key!r})"
