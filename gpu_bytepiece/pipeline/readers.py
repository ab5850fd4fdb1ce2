"""Inputs of ``gpu-bytepiece encode``: finding them, planning shards, reading them.

Input kinds (from the name, after a ``.gz``/``.zst``/``.bz2`` suffix; or forced
by ``input_format``):

- ``text`` (``.txt``, ``.text``): one document per file, newlines kept
  (BytePiece tokenizes line by line anyway, so a document is a file, not a
  line). With ``split_lines`` each line is a document, without its ``\\n``.
- ``jsonl`` (``.jsonl``, ``.json``, ``.ndjson``): one JSON object per line,
  the text under ``text_key``; blank lines are not documents (counted).
- ``parquet`` (``.parquet``, ``.pq``): the string column ``text_key``.
- ``-``: standard input, text or JSONL (``auto`` looks at the first byte).

Reading is streamed in blocks: memory follows ``batch_bytes``, never a file's
size. A document larger than :data:`TEXT_FRAGMENT_BYTES` (only possible for a
text file read whole) is read and tokenized in fragments cut where a segment
ends (after a run of ``\\n``), which gives exactly the ids of the whole.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np

from .errors import DataError, PipelineError

try:  # ~2x faster than json on long strings; optional: without it json does all the work
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a dependency, but a missing wheel must not break reading
    _fast_loads = None

__all__ = [
    "InputFile", "Batch", "ShardStats", "discover_inputs", "plan_shards", "iter_shard",
    "TEXT_FRAGMENT_BYTES",
]

#: A one-document text file larger than this is tokenized in fragments of
#: about this size, cut at segment ends (ids are those of the whole document).
#: A fixed constant, not ``batch_bytes``, so that sampled outputs
#: (``alpha >= 0``) do not depend on the batch size either.
TEXT_FRAGMENT_BYTES = 32 << 20

#: Bytes read at a time from an input stream.
READ_BLOCK = 4 << 20

_COMPRESSION = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}
_KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".txt": "text", ".text": "text",
          ".parquet": "parquet", ".pq": "parquet"}
_GLOB_CHARS = re.compile(r"[*?\[]")
_SURROGATE = re.compile("[\ud800-\udfff]")


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
    comp = _COMPRESSION.get(ext)
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
            "optionally .gz/.zst/.bz2); pass --input-format text|jsonl|parquet")
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
    files are grouped; stdin and each range of a split file are shards alone. The plan depends only on the
    inputs and ``shard_bytes``.

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
            import pyarrow.parquet as pq

            md = pq.ParquetFile(inp.path).metadata
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


# ------------------------------------------------------------------ reading
@dataclass
class ShardStats:
    """What reading a shard saw: documents, bad records per reason, samples."""

    docs: int = 0
    text_bytes: int = 0
    blank_lines: int = 0
    skipped: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)

    MAX_SAMPLES = 10

    def skip(self, err: DataError) -> None:
        self.skipped[err.reason] = self.skipped.get(err.reason, 0) + 1
        if len(self.samples) < self.MAX_SAMPLES:
            self.samples.append(err.to_dict())


@dataclass
class Batch:
    """Pieces of documents to tokenize together.

    ``texts`` are pieces (str list or pyarrow string array). A piece is a
    whole document unless ``starts``/``ends`` (bool arrays) say it is not the
    first/last piece of its document. ``first_continues``: the first piece
    continues the writer's open document; ``last_open``: the last document
    goes on in the next batch; ``abort_open``: drop the writer's open
    document first (it turned out bad). ``table``: the rows for Parquet
    output (one per piece). ``input_bytes``: progress in input-file bytes.
    """

    texts: object
    starts: np.ndarray | None = None
    ends: np.ndarray | None = None
    first_continues: bool = False
    last_open: bool = False
    abort_open: bool = False
    table: object = None
    input_bytes: int = 0

    def __len__(self) -> int:
        return len(self.texts)


class _Source:
    """A binary input stream and how far into the file it has read."""

    def __init__(self, inp: InputFile, start: int = 0):
        self.inp = inp
        self.raw = None
        if inp.is_stdin:
            self.stream = sys.stdin.buffer
        elif inp.compression:
            import pyarrow as pa

            self.raw = pa.OSFile(inp.path, "rb")
            self.stream = pa.CompressedInputStream(self.raw, inp.compression)
        else:
            self.stream = open(inp.path, "rb", buffering=0)
            if start:
                self.stream.seek(start)
        self._last = start

    def consumed(self) -> int:
        """Input-file bytes read since the last call (compressed bytes for compressed files)."""
        if self.inp.is_stdin:
            return 0
        pos = self.raw.tell() if self.raw is not None else self.stream.tell()
        d, self._last = pos - self._last, pos
        return d

    def read(self, n: int) -> bytes:
        return self.stream.read(n)

    def close(self) -> None:
        if not self.inp.is_stdin:
            self.stream.close()
            if self.raw is not None:
                self.raw.close()


def iter_line_blocks(read, start: int, end: int | None, block: int = READ_BLOCK) -> Iterator:
    """Yield ``(offset, data)``: runs of whole lines of a stream.

    ``read(n)`` reads from file offset ``start - 1`` when ``start > 0`` (the
    byte before the range, to find where lines begin), else from 0. The lines
    yielded are those whose first byte lies in ``[start, end)`` (``end`` None:
    to the end); each ends with ``\\n`` except possibly the file's last. Reads
    at most about ``block`` bytes at a time, and little past ``end``.
    """
    small = 1 << 16
    if start > 0:
        off = start - 1
        while True:
            chunk = read(small)
            if not chunk:
                return
            i = chunk.find(b"\n")
            if i >= 0:
                off += i + 1
                buf = chunk[i + 1:]
                break
            off += len(chunk)
    else:
        off, buf = 0, b""
    eof = False
    while True:
        if end is not None and off >= end:
            return
        if end is not None and end - off <= len(buf):
            i = buf.find(b"\n", end - off - 1)
            if i >= 0:  # the last line that starts before `end` is complete
                yield off, buf[:i + 1]
                return
        elif len(buf) >= block:
            j = buf.rfind(b"\n")
            if j >= 0:
                yield off, buf[:j + 1]
                off += j + 1
                buf = buf[j + 1:]
                continue
        if eof:
            if buf:
                yield off, buf
            return
        want = block if end is None else max(small, min(block, end - off - len(buf) + 1))
        chunk = read(want)
        if chunk:
            buf = buf + chunk if buf else chunk
        else:
            eof = True


def _count_lines(path: str, offset: int) -> int:
    """1-based number of the line starting at byte ``offset`` of a plain file."""
    n = 1
    with open(path, "rb") as f:
        left = offset
        while left > 0:
            chunk = f.read(min(left, 16 << 20))
            if not chunk:
                break
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


class _ShardReader:
    def __init__(self, inputs, params: dict, on_error: str, stats: ShardStats, want_table: bool):
        self.inputs = inputs
        self.text_key = params.get("text_key", "text")
        self.split_lines = bool(params.get("split_lines"))
        self.batch_bytes = int(params.get("batch_bytes") or (16 << 20))
        self.on_error = on_error
        self.stats = stats
        self.want_table = want_table

    def bad(self, err: DataError) -> None:
        if self.on_error == "fail":
            if err.line is None and err.offset is not None and err.path != "-":
                inp = next((x for x in self.inputs if x.path == err.path), None)
                if inp is not None and inp.compression is None:
                    err = DataError(err.path, err.reason, err.detail, line=_count_lines(err.path, err.offset))
            raise err
        self.stats.skip(err)

    # -- jsonl -------------------------------------------------------------
    def jsonl(self, inp: InputFile, start: int, end: int) -> Iterator[Batch]:
        src = _Source(inp, max(start - 1, 0))
        count_lines = start == 0  # line numbers known from the top of the stream
        line_no = 0
        key = self.text_key
        # The fast parser only takes the common case: a line that it parses to
        # an object whose text field is a string (it refuses lone surrogates,
        # NaN, BOMs and bad UTF-8, and gives the same strings as json). Every
        # other line is read by the json module (_json_record), which
        # classifies it exactly.
        # Not for Parquet output: the other fields are kept there, and orjson
        # reads integers past 64 bits as floats.
        fast = None if self.want_table else _fast_loads
        texts, metas, size = [], [], 0
        try:
            for off, data in iter_line_blocks(src.read, start, None if end < 0 or inp.compression else end):
                lines = data.split(b"\n")
                if lines[-1] == b"":
                    lines.pop()
                pos = off
                for raw in lines:
                    line_no += 1
                    here = pos
                    pos += len(raw) + 1
                    if raw[:1] in _BLANK_START and not raw.strip():  # b"" is in it too
                        self.stats.blank_lines += 1
                        continue
                    text = None
                    if fast is not None:
                        try:
                            obj = fast(raw)
                        except ValueError:
                            obj = None
                        if type(obj) is dict:
                            text = obj.get(key)
                            if type(text) is not str:
                                text = None
                    if text is None:
                        where = dict(line=line_no) if count_lines else dict(offset=here)
                        record = self._json_record(inp, raw, where)
                        if record is None:
                            continue
                        text, meta = record
                        if self.want_table:
                            metas.append(meta)
                    texts.append(text)
                    size += len(raw)
                    if size >= self.batch_bytes:
                        yield self._batch(texts, metas, src.consumed())
                        texts, metas, size = [], [], 0
            yield self._batch(texts, metas, src.consumed())
        finally:
            src.close()

    def _json_record(self, inp: InputFile, raw: bytes, where: dict):
        """One line read by the json module: ``(text, meta)``, or None for a bad
        record (counted or raised by :meth:`bad`). ``meta`` is the line's other
        fields as compact JSON (None when there are none), for Parquet output."""
        key = self.text_key
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.bad(DataError(inp.path, "invalid_utf8",
                               f"byte {e.start} of the line is {raw[e.start:e.start + 1]!r}", **where))
            return None
        try:
            obj = json.loads(s)
        except ValueError as e:
            self.bad(DataError(inp.path, "malformed_json", str(e), **where))
            return None
        if type(obj) is not dict:
            self.bad(DataError(inp.path, "not_an_object", f"got a JSON {type(obj).__name__}", **where))
            return None
        text = obj.get(key, _MISSING)
        if type(text) is not str:
            if text is _MISSING:
                self.bad(DataError(inp.path, "missing_text",
                                   f"no {key!r} field (fields: {', '.join(map(repr, list(obj)[:8]))})", **where))
            elif text is None:
                self.bad(DataError(inp.path, "null_text", f"{key!r} is null", **where))
            else:
                self.bad(DataError(inp.path, "text_not_string", f"{key!r} is a JSON {type(text).__name__}", **where))
            return None
        escapes = b"\\ud" in raw or b"\\uD" in raw  # a lone surrogate needs one
        if escapes and not text.isascii():
            m = _SURROGATE.search(text)
            if m is not None:
                self.bad(DataError(inp.path, "lone_surrogate",
                                   f"{m.group()!r} at character {m.start()} of {key!r}", **where))
                return None
        meta = None
        if self.want_table:
            fields = {k: v for k, v in obj.items() if k != key}
            # ASCII escapes where the line has \\ud escapes: a lone surrogate elsewhere stays valid
            meta = json.dumps(fields, ensure_ascii=escapes, separators=(",", ":")) if fields else None
        return text, meta

    def _batch(self, texts, metas, consumed) -> Batch:
        table = None
        if self.want_table:
            import pyarrow as pa

            table = pa.table({self.text_key: pa.array(texts, pa.string()), "meta": pa.array(metas, pa.string())})
        self.stats.docs += len(texts)
        return Batch(texts, table=table, input_bytes=consumed)

    # -- text, one document per line ---------------------------------------
    def text_lines(self, inp: InputFile, start: int, end: int) -> Iterator[Batch]:
        import pyarrow as pa

        src = _Source(inp, max(start - 1, 0))
        count_lines = start == 0
        line_no = 1
        try:
            for off, data in iter_line_blocks(src.read, start, None if end < 0 or inp.compression else end,
                                              block=min(max(self.batch_bytes, 1 << 16), 64 << 20)):
                a = np.frombuffer(data, dtype=np.uint8)
                nl = np.flatnonzero(a == 10)
                starts = np.concatenate(([0], nl + 1))
                ends = np.concatenate((nl, [len(a)]))
                if ends[-1] == starts[-1]:  # the block ends with \n: no unterminated last line
                    starts, ends = starts[:-1], ends[:-1]
                n = len(starts)
                keep = np.ones(n, dtype=bool)
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    for k in range(n):
                        seg = data[starts[k]:ends[k]]
                        try:
                            seg.decode("utf-8")
                        except UnicodeDecodeError as e:
                            where = dict(line=line_no + k) if count_lines else dict(offset=off + int(starts[k]))
                            self.bad(DataError(inp.path, "invalid_utf8",
                                               f"byte {e.start} of the line is {seg[e.start:e.start + 1]!r}", **where))
                            keep[k] = False
                line_no += n
                if not keep.all():
                    starts, ends = starts[keep], ends[keep]
                lens = ends - starts
                offsets = np.zeros(len(starts) + 1, dtype=np.int64)
                np.cumsum(lens, out=offsets[1:])
                if len(starts) == n:
                    body = a[a != 10]  # every line, without its \n
                else:
                    idx = np.repeat(starts - offsets[:-1], lens) + np.arange(int(offsets[-1]), dtype=np.int64)
                    body = a[idx]
                otype = pa.string() if offsets[-1] < (1 << 31) else pa.large_string()
                arr = pa.Array.from_buffers(otype, len(starts), [None, pa.py_buffer(
                    offsets.astype(np.int32 if otype == pa.string() else np.int64)), pa.py_buffer(body)])
                self.stats.docs += len(arr)
                table = pa.table({self.text_key: arr}) if self.want_table else None
                yield Batch(arr, table=table, input_bytes=src.consumed())
        finally:
            src.close()

    # -- text, one document per file ---------------------------------------
    def text_files(self, parts) -> Iterator[Batch]:
        """Whole files as documents; big ones in fragments cut at segment ends."""
        pieces, starts, ends, size, consumed = [], [], [], 0, 0
        first_continues = abort = False
        doc_at = None  # index in `pieces` of the open document's first piece (None: an earlier batch)
        for inp in parts:
            src = _Source(inp)
            line_no, buf, eof, first = 1, b"", False, True
            try:
                while True:
                    while not eof and len(buf) <= TEXT_FRAGMENT_BYTES:
                        chunk = src.read(READ_BLOCK)
                        if chunk:
                            buf += chunk
                        else:
                            eof = True
                    cut = _fragment_cut(buf, eof)
                    if cut is None:  # no segment end yet: read on
                        chunk = src.read(READ_BLOCK)
                        if chunk:
                            buf += chunk
                        else:
                            eof = True
                        continue
                    frag, buf = buf[:cut], buf[cut:]
                    last = eof and not buf
                    try:
                        text = frag.decode("utf-8")
                    except UnicodeDecodeError as e:
                        line = line_no + frag.count(b"\n", 0, e.start)
                        self.bad(DataError(inp.path, "invalid_utf8",
                                           f"byte {e.start} of the fragment is {frag[e.start:e.start + 1]!r}",
                                           line=line))
                        if not first:  # drop the pieces of this document already read
                            if doc_at is None:  # it began in an earlier batch: the writer drops it
                                abort, first_continues = True, False
                                doc_at = 0
                            del pieces[doc_at:], starts[doc_at:], ends[doc_at:]
                        break
                    line_no += frag.count(b"\n")
                    if first:
                        doc_at = len(pieces)
                    pieces.append(text)
                    starts.append(first)
                    ends.append(last)
                    size += len(frag)
                    first = False
                    if last:
                        self.stats.docs += 1
                    if size >= self.batch_bytes:
                        consumed += src.consumed()
                        yield self._frag_batch(pieces, starts, ends, first_continues, abort, consumed)
                        first_continues, abort, doc_at = not last, False, None
                        pieces, starts, ends, size, consumed = [], [], [], 0, 0
                    if last:
                        break
            finally:
                consumed += src.consumed()
                src.close()
        yield self._frag_batch(pieces, starts, ends, first_continues, abort, consumed)

    def _frag_batch(self, pieces, starts, ends, first_continues, abort, consumed) -> Batch:
        whole = all(starts) and all(ends)
        table = None
        if self.want_table:
            import pyarrow as pa

            table = pa.table({self.text_key: pa.array(pieces, pa.string())})
        return Batch(list(pieces), starts=None if whole else np.array(starts, dtype=bool),
                     ends=None if whole else np.array(ends, dtype=bool), first_continues=first_continues,
                     last_open=bool(pieces) and not ends[-1], abort_open=abort, table=table,
                     input_bytes=consumed)

    # -- parquet -------------------------------------------------------------
    def parquet(self, inp: InputFile, rg_start: int, rg_end: int) -> Iterator[Batch]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(inp.path)
        md = pf.metadata
        schema = pf.schema_arrow
        key = self.text_key
        if schema.get_field_index(key) < 0:
            raise PipelineError(f"{inp.path}: no column {key!r} (columns: {', '.join(schema.names)}); "
                                "pass --text-key")
        t = schema.field(key).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)
                or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))):
            raise PipelineError(f"{inp.path}: column {key!r} is {t}, not a string column")
        row0 = sum(md.row_group(g).num_rows for g in range(rg_start))
        rows = sum(md.row_group(g).num_rows for g in range(rg_start, rg_end))
        if rows == 0:
            yield Batch([], input_bytes=0)
            return
        col = schema.get_field_index(key)
        text_bytes = sum(md.row_group(g).column(col).total_uncompressed_size for g in range(rg_start, rg_end))
        disk = sum(md.row_group(g).column(c).total_compressed_size
                   for g in range(rg_start, rg_end) for c in range(md.row_group(g).num_columns))
        per_row = max(1, text_bytes // rows)
        batch_rows = max(1, min(rows, self.batch_bytes // per_row))
        columns = None if self.want_table else [key]
        done = 0
        reported = 0
        for rb in pf.iter_batches(batch_size=batch_rows, row_groups=list(range(rg_start, rg_end)),
                                  columns=columns, use_threads=False):
            arr = rb.column(rb.schema.get_field_index(key))
            n = len(arr)
            keep = None
            if arr.null_count:
                nulls = np.flatnonzero(np.asarray(arr.is_null(), dtype=bool))
                for r in nulls:
                    self.bad(DataError(inp.path, "null_text", f"{key!r} is null", row=row0 + done + int(r)))
                keep = np.ones(n, dtype=bool)
                keep[nulls] = False
            try:
                arr.validate(full=True)
            except pa.ArrowInvalid:
                keep = np.ones(n, dtype=bool) if keep is None else keep
                raw = arr.cast(pa.large_binary()) if not pa.types.is_large_string(arr.type) else arr.view(pa.large_binary())
                for r in range(n):
                    if not keep[r]:
                        continue
                    v = raw[r].as_py()
                    try:
                        v.decode("utf-8")
                    except UnicodeDecodeError as e:
                        self.bad(DataError(inp.path, "invalid_utf8",
                                           f"byte {e.start} of {key!r} is {v[e.start:e.start + 1]!r}",
                                           row=row0 + done + r))
                        keep[r] = False
            done += n
            if keep is not None:
                mask = pa.array(keep)
                rb = rb.filter(mask)
                arr = rb.column(rb.schema.get_field_index(key))
            self.stats.docs += len(arr)
            progress = disk * done // rows - reported
            reported += progress
            table = pa.Table.from_batches([rb]) if self.want_table else None
            yield Batch(arr, table=table, input_bytes=progress)


_MISSING = object()
_BLANK_START = b" \t\r\x0b\x0c"


def _fragment_cut(buf: bytes, eof: bool) -> int | None:
    """Where to end the next fragment of a one-document text: after a run of
    ``\\n`` followed by another byte, at or past :data:`TEXT_FRAGMENT_BYTES`;
    the whole buffer at the end of the file; None: need more bytes."""
    if len(buf) <= TEXT_FRAGMENT_BYTES:
        return len(buf) if eof else None
    i = buf.find(b"\n", TEXT_FRAGMENT_BYTES - 1)
    while i >= 0:
        j = i
        while j < len(buf) and buf[j] == 10:
            j += 1
        if j < len(buf):
            return j
        if eof:
            return len(buf)
        return None  # the run of \n may go on in the next block
    return len(buf) if eof else None


def iter_shard(inputs: list, shard: dict, params: dict, on_error: str, stats: ShardStats,
               want_table: bool = False) -> Iterator[Batch]:
    """Read one shard's documents as :class:`Batch` es (see :func:`plan_shards`).

    Bad records raise :class:`DataError` (``on_error='fail'``) or are counted
    in ``stats`` (``'skip'``).
    """
    reader = _ShardReader(inputs, params, on_error, stats, want_table)
    whole_text = []
    for i, a, b in shard["parts"]:
        inp = inputs[i]
        if inp.kind == "text" and not params.get("split_lines"):
            whole_text.append(inp)
            continue
        if whole_text:
            yield from reader.text_files(whole_text)
            whole_text = []
        if inp.kind == "jsonl":
            yield from reader.jsonl(inp, a, b)
        elif inp.kind == "text":
            yield from reader.text_lines(inp, a, b)
        elif inp.kind == "parquet":
            yield from reader.parquet(inp, a, b)
        else:  # pragma: no cover
            raise PipelineError(f"unknown input kind {inp.kind!r}")
    if whole_text:
        yield from reader.text_files(whole_text)

