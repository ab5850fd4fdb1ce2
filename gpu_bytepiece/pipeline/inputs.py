"""Inputs of an encode job (and of training): finding them, and cutting them into shards.

Input kinds (from the name, after a compression suffix; or forced by
``input_format``):

- ``text`` (``.txt``, ``.text``): one document per file, newlines kept
  (BytePiece tokenizes line by line anyway, so a document is a file, not a
  line). With ``split_lines`` each line is a document, without its ``\\n``.
- ``jsonl`` (``.jsonl``, ``.json``, ``.ndjson``): one JSON object per line,
  the text under ``text_key``; blank lines are not documents (counted).
- ``parquet`` (``.parquet``, ``.pq``): the string column ``text_key``.
- ``-``: standard input, text or JSONL (``auto`` looks at the first byte).

Text and JSONL may be compressed: ``.gz``/``.gzip``, ``.zst``/``.zstd``,
``.bz2``, ``.xz`` (streamed by :mod:`.streams`). Directories are searched
recursively and globs expanded (sorted by path); hidden names are skipped.
Reading is in :mod:`.readers`.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import sys
from dataclasses import asdict, dataclass

from .errors import PipelineError

__all__ = ["InputFile", "parquet_file", "discover_inputs", "sniff_stdin", "split_name", "plan_shards", "COMPRESSION"]

#: Compression suffixes and the codec each names (what :class:`InputFile` records).
COMPRESSION = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}
_KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".txt": "text", ".text": "text",
          ".parquet": "parquet", ".pq": "parquet"}
_GLOB_CHARS = re.compile(r"[*?\[]")


# ---------------------------------------------------------------- discovery
@dataclass(frozen=True)
class InputFile:
    """One input: where, what kind, and its identity (to refuse changed inputs)."""

    path: str
    kind: str
    compression: str | None
    size: int
    mtime_ns: int
    fingerprint: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InputFile":
        return cls(**{k: d[k] for k in ("path", "kind", "compression", "size", "mtime_ns", "fingerprint")})

    @property
    def is_stdin(self) -> bool:
        return self.path == "-"


def split_name(path: str) -> tuple[str | None, str | None]:
    """``(kind, compression)`` from a file name; kind None when unknown."""
    base = os.path.basename(path).lower()
    stem, ext = os.path.splitext(base)
    comp = COMPRESSION.get(ext)
    if comp:
        stem, ext = os.path.splitext(stem)
    return _KINDS.get(ext), comp


def fingerprint(path: str, size: int) -> str:
    """A fast content hash: size plus the first, middle and last MiB."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(size).encode())
    chunk = 1 << 20
    with open(path, "rb") as f:
        for pos in sorted({0, max(0, size // 2 - chunk // 2), max(0, size - chunk)}):
            f.seek(pos)
            h.update(f.read(chunk))
    return h.hexdigest()


def _input_file(path: str, input_format: str) -> InputFile:
    kind, comp = split_name(path)
    if input_format != "auto":
        kind = input_format
    if kind is None:
        raise PipelineError(
            f"{path}: unknown input kind (expected .txt, .jsonl, .json, .ndjson or .parquet, "
            "optionally .gz/.zst/.bz2/.xz); pass --input-format text|jsonl|parquet")
    if kind == "parquet" and comp:
        raise PipelineError(f"{path}: a Parquet file cannot be compressed as a whole (it compresses inside)")
    try:
        st = os.stat(path)
    except OSError as e:
        raise PipelineError(f"{path}: cannot read: {e.strerror}") from None
    return InputFile(os.path.abspath(path), kind, comp, st.st_size, st.st_mtime_ns, fingerprint(path, st.st_size))


def _walk(directory: str, input_format: str) -> list:
    found = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = os.path.join(root, name)
            if input_format != "auto" or split_name(p)[0] is not None:
                found.append(p)
    return found


def discover_inputs(specs, input_format: str = "auto", stdin_format: str | None = None) -> list:
    """Expand files, directories (recursively) and globs into :class:`InputFile` s.

    Order: the order of ``specs``; inside a directory or glob, sorted by path.
    ``-`` is standard input (``stdin_format``: ``text`` or ``jsonl``).
    """
    if input_format not in ("auto", "text", "jsonl", "parquet"):
        raise PipelineError(f"--input-format must be auto, text, jsonl or parquet, got {input_format!r}")
    out = []
    for spec in specs:
        spec = os.fspath(spec)
        if spec == "-":
            if sum(1 for s in specs if s == "-") > 1:
                raise PipelineError("standard input ('-') can be given only once")
            kind = stdin_format or (input_format if input_format != "auto" else "text")
            if kind == "parquet":
                raise PipelineError("Parquet cannot be read from standard input; pass a file")
            out.append(InputFile("-", kind, None, 0, 0, ""))
        elif os.path.isdir(spec):
            files = _walk(spec, input_format)
            if not files:
                raise PipelineError(f"{spec}: directory holds no .txt, .jsonl or .parquet files")
            out.extend(_input_file(p, input_format) for p in files)
        elif os.path.exists(spec):
            out.append(_input_file(spec, input_format))
        elif _GLOB_CHARS.search(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise PipelineError(f"{spec}: the pattern matches no file")
            for m in matches:
                if os.path.isdir(m):
                    out.extend(_input_file(p, input_format) for p in _walk(m, input_format))
                else:
                    out.append(_input_file(m, input_format))
        else:
            raise PipelineError(f"{spec}: no such file or directory")
    if not out:
        raise PipelineError("no input")
    return out


def sniff_stdin() -> str:
    """``jsonl`` if standard input starts with ``{`` (after blanks), else ``text``."""
    buf = sys.stdin.buffer
    head = buf.peek(4096)[:4096] if hasattr(buf, "peek") else b""
    return "jsonl" if head.lstrip().startswith(b"{") else "text"


def parquet_file(path: str):
    """``pyarrow.parquet.ParquetFile(path)``; a corrupt or truncated file is a
    :class:`PipelineError` naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise PipelineError(f"{path}: not a readable Parquet file ({e}); is it truncated?") from None


# ----------------------------------------------------------------- planning
def _line_splittable(inp: InputFile, split_lines: bool) -> bool:
    return not inp.is_stdin and inp.compression is None and (
        inp.kind == "jsonl" or (inp.kind == "text" and split_lines))


def plan_shards(inputs: list, shard_bytes: int, split_lines: bool) -> list:
    """Cut the inputs into shards of about ``shard_bytes`` input bytes.

    A shard is a list of parts ``[input index, start, end]``, read in order:
    a byte range of an uncompressed line file (lines whose first byte lies in
    ``[start, end)``), a range of Parquet row groups, or a whole file
    (``[i, 0, size]``; compressed files and one-document text files). Small
    files are grouped; stdin and each range of a split file are shards alone.
    The plan depends only on the inputs and ``shard_bytes``.

    Returns
    -------
    list of dict
        ``{"index": k, "parts": [[i, start, end], ...], "bytes": input bytes}``
    """
    if shard_bytes < 1:
        raise PipelineError(f"shard size must be positive, got {shard_bytes}")
    parts = []  # (input, start, end, weight, alone)
    for i, inp in enumerate(inputs):
        if inp.is_stdin:
            parts.append((i, 0, -1, 0, True))
        elif _line_splittable(inp, split_lines) and inp.size > shard_bytes:
            for a in range(0, inp.size, shard_bytes):
                b = min(a + shard_bytes, inp.size)
                parts.append((i, a, b, b - a, True))
        elif inp.kind == "parquet":
            md = parquet_file(inp.path).metadata
            a, w = 0, 0
            for g in range(md.num_row_groups):
                gw = sum(md.row_group(g).column(c).total_compressed_size
                         for c in range(md.row_group(g).num_columns))
                if g > a and w + gw > shard_bytes:
                    parts.append((i, a, g, w, False))
                    a, w = g, 0
                w += gw
            parts.append((i, a, md.num_row_groups, w, False))
        else:
            parts.append((i, 0, inp.size, inp.size, False))
    shards, cur, weight, cur_alone = [], [], 0, False
    for (i, a, b, w, alone) in parts:
        if cur and (alone or cur_alone or weight + w > shard_bytes):
            shards.append((cur, weight))
            cur, weight = [], 0
        cur.append([i, a, b])
        weight += w
        cur_alone = alone
    if cur:
        shards.append((cur, weight))
    return [{"index": k, "parts": p, "bytes": w} for k, (p, w) in enumerate(shards)]
