"""``gpu-bytepiece train``: train a BytePiece model from files, streamed.

Also :class:`FileTexts`, the re-iterable of documents read from text, JSONL
and Parquet files that the command hands to :class:`~gpu_bytepiece.trainer.Trainer`
(usable from Python too).
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import os
import sys
import time

from .text import TextError

__all__ = ["add_subcommands", "FileTexts", "run_train"]

#: A .txt file is read in chunks of about this many characters.
TXT_CHUNK_CHARS = 1 << 20

_EPILOG = """\
inputs (streamed, never loaded whole; read twice, once per counting pass):
  FILE.txt       one document per file (its text as is; read in chunks cut
                 after runs of newlines, which gives the same training
                 segments as the whole file)
  FILE.jsonl     one JSON object per line, the document under --text-key;
                 also .json/.ndjson; blank lines are skipped
  FILE.parquet   the string column --text-key
  *.gz *.bz2 *.xz   compressed text or JSONL

With one --vocab-size the model goes to --output; with several, one model per
size goes to OUTPUT.SIZE (as BytePiece's Trainer.save). The models equal
bytepiece 0.6.3's Trainer on the same documents and parameters.
"""


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
                    chunk = f.read(TXT_CHUNK_CHARS)
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


def _size(text):
    from .trainer import _parse_bytes

    try:
        return _parse_bytes(text, "--memory-budget")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_subcommands(sub) -> None:
    """Register ``train`` on an argparse subparsers object."""
    p = sub.add_parser(
        "train",
        help="train a BytePiece model (exactly bytepiece 0.6.3's Trainer, fast)",
        description="Train a BytePiece model from text, JSONL or Parquet files: an n-gram language "
                    "model segments the text, then Unigram pruning picks the vocabulary.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="FILE", help="input files (see below)")
    p.add_argument("-o", "--output", required=True, help="model path (with several sizes: OUTPUT.SIZE each)")
    p.add_argument("--text-key", default="text", help="JSON field / Parquet column of the text (default: text)")
    p.add_argument("--vocab-size", type=int, nargs="+", default=[10000], metavar="N",
                   help="vocabulary size(s), >= 259 (default: 10000)")
    p.add_argument("--order", type=int, default=6, help="n-gram order, 1..7 (default: 6)")
    p.add_argument("--max-piece-length", type=int, default=36, help="longest piece in bytes (default: 36)")
    p.add_argument("--min-count", type=int, default=2, help="prune n-grams and pieces seen fewer times (default: 2)")
    p.add_argument("--isolate-digits", action="store_true", help="every digit is a segment of its own")
    p.add_argument("--no-ensure-unicode", dest="ensure_unicode", action="store_false",
                   help="allow pieces that start inside a UTF-8 character")
    p.add_argument("--workers", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--memory-budget", type=_size, default=None, metavar="SIZE",
                   help="memory for n-gram and piece count runs before they spill to disk, e.g. 512M, 2G "
                        "(default: 1G)")
    p.add_argument("--tmp-dir", default=None, help="where spills go (default: the system temporary folder)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from . import _gc
    from .trainer import Trainer

    _gc.release()  # startup is over: the training allocates and frees a lot

    try:
        texts = FileTexts(args.inputs, args.text_key)
        sizes = args.vocab_size if len(args.vocab_size) > 1 else args.vocab_size[0]
        trainer = Trainer(order=args.order, max_vocab_size=sizes, max_piece_length=args.max_piece_length,
                          min_count=args.min_count, isolate_digits=args.isolate_digits,
                          ensure_unicode=args.ensure_unicode)
        t0 = time.perf_counter()
        trainer.train(texts, workers=args.workers, device=args.device, memory_budget=args.memory_budget,
                      tmp_dir=args.tmp_dir, progress=not args.quiet)
        paths = trainer.save(args.output)
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        print(f"gpu-bytepiece train: error: {e}", file=sys.stderr)
        return 2
    st = trainer.stats
    print(f"trained on {st['n_docs']:,} documents, {st['n_bytes']:,} bytes in {time.perf_counter() - t0:.1f} s "
          f"({st['device']})", file=sys.stderr)
    for m, path in zip(trainer.models, paths):
        print(f"{path}: {m.vocab_size} ids ({len(m.pieces)} pieces)", file=sys.stderr)
    return 0
