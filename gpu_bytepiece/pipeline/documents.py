"""Input files as ``str`` documents, read exactly as ``gpu-bytepiece encode`` reads them.

What ``gpu-bytepiece train`` reads its inputs with, so that ``encode`` and
``train`` accept the same inputs (files, directories, globs, every
compression, ``--text-key``) and report bad records alike
(:class:`~.errors.DataError`).
"""

from __future__ import annotations

import os
from typing import Iterator

from .errors import PipelineError
from .inputs import discover_inputs, plan_shards, sniff_stdin
from .readers import ShardStats, iter_shard

__all__ = ["InputTexts", "iter_texts"]


class InputTexts:
    """The documents of input files as ``str``, read exactly as ``gpu-bytepiece
    encode`` reads them; iterable many times (the trainer reads its texts twice).

    Parameters
    ----------
    paths : str or list of str
        Files, directories (searched recursively), globs, or ``-`` (standard
        input: iterable once), as ``encode`` takes them (see :mod:`.inputs`):
        ``.txt``, ``.jsonl``/``.json``/``.ndjson``, ``.parquet``; text and
        JSONL optionally ``.gz``/``.zst``/``.bz2``/``.xz``.
    text_key : str
        JSONL field / Parquet column holding the text.
    input_format : {'auto', 'text', 'jsonl', 'parquet'}
        How to read the inputs (``auto``: from each name).
    split_lines : bool
        Text files: one document per line (default: one per file).
    on_error : {'fail', 'skip'}
        A bad record raises :class:`DataError` naming file and line or row
        (``fail``), or is skipped and counted in ``stats`` (``skip``).
    stats : ShardStats, optional
        Collects documents, blank lines and skipped records of every pass.

    Raises
    ------
    PipelineError
        At construction: an input is missing, of unknown kind, a directory
        holds no input, a glob matches nothing.

    Notes
    -----
    A one-document text file larger than ``config.TEXT_FRAGMENT_BYTES`` is
    yielded in fragments cut right after a run of newlines, so memory stays
    bounded; segments never cross such a cut (nor does NFC compose across a
    newline), so tokenizing or training on the fragments equals doing it on
    the whole. With ``on_error='skip'`` a document's fragments are held back
    until it has been read whole (a bad fragment drops the whole document).
    """

    def __init__(self, paths, *, text_key: str = "text", input_format: str = "auto", split_lines: bool = False,
                 on_error: str = "fail", stats: ShardStats | None = None):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = [os.fspath(p) for p in paths]
        if on_error not in ("fail", "skip"):
            raise PipelineError(f"on_error must be fail or skip, got {on_error!r}")
        stdin_format = None
        if "-" in paths:
            stdin_format = input_format if input_format != "auto" else sniff_stdin()
        self.inputs = discover_inputs(paths, input_format, stdin_format)
        self.params = {"text_key": text_key, "split_lines": bool(split_lines)}
        self.on_error = on_error
        self.stats = stats if stats is not None else ShardStats()
        self._stdin_read = False

    def __iter__(self) -> Iterator[str]:
        if any(i.is_stdin for i in self.inputs):
            if self._stdin_read:
                raise PipelineError("standard input ('-') can be read only once")
            self._stdin_read = True
        hold = self.on_error == "skip"
        for shard in plan_shards(self.inputs, 1 << 62, self.params["split_lines"]):
            pending = []  # pieces of a document not known to be good yet (skip)
            for batch in iter_shard(self.inputs, shard, self.params, self.on_error, self.stats):
                if batch.abort_open:
                    pending = []
                texts = batch.texts if isinstance(batch.texts, list) else batch.texts.to_pylist()
                if batch.starts is None or not hold:
                    yield from texts
                    continue
                for text, end in zip(texts, batch.ends):
                    pending.append(text)
                    if end:
                        yield from pending
                        pending = []

    def identity(self) -> dict:
        """What the documents are (JSON): each input's path, size and content fingerprint, and how
        they are read; a training's work folder compares it to refuse changed inputs."""
        return {"inputs": [[i.path, i.size, i.fingerprint] for i in self.inputs],
                "read": dict(self.params, on_error=self.on_error)}

    @property
    def size_hint(self):
        """The input files' bytes on disk when all are uncompressed text or JSONL (about their UTF-8
        text; a progress total), else None."""
        if any(i.is_stdin or i.compression or i.kind == "parquet" for i in self.inputs):
            return None
        return sum(i.size for i in self.inputs)

    def __repr__(self) -> str:
        return f"InputTexts({[i.path for i in self.inputs]!r}, text_key={self.params['text_key']!r})"


def iter_texts(paths, *, text_key: str = "text", input_format: str = "auto", split_lines: bool = False,
               on_error: str = "fail", stats: ShardStats | None = None) -> Iterator[str]:
    """The documents of input files as ``str``, once (see :class:`InputTexts`,
    which takes the same arguments and can be iterated again).

    Inputs are found when this is called (errors raise here); the iterator
    reads them lazily.
    """
    return iter(InputTexts(paths, text_key=text_key, input_format=input_format, split_lines=split_lines,
                           on_error=on_error, stats=stats))
