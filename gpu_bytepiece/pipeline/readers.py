"""Reading inputs: one reader per format, a shard's documents as batches.

- :class:`_JsonlReader`: JSONL, one document per line (orjson for the common
  line, json for every other, so that bad lines are classified exactly);
- :class:`_TextLinesReader`: text, one document per line (``split_lines``);
- :class:`_TextFilesReader`: text, one document per file; a document larger
  than ``config.TEXT_FRAGMENT_BYTES`` is read and tokenized in fragments cut
  where a segment ends (after a run of ``\\n``), which gives exactly the ids
  of the whole;
- :class:`_ParquetReader`: the string column ``text_key`` of a Parquet file.

:func:`iter_shard` reads one shard of an encode job (:func:`.inputs.plan_shards`)
as batches (:mod:`.documents` reads whole inputs through it as ``str``
documents, for training). Reading is streamed in blocks: memory
follows the batch size, never a file's size. Bad records raise
:class:`~.errors.DataError` (``on_error='fail'``) or are counted per reason
(``'skip'``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Iterator

import numpy as np

from .. import config
from .batches import Batch, ShardStats
from .errors import DataError, PipelineError
from .inputs import InputFile, parquet_file
from .streams import LongLine, Source, check_unchanged, count_lines, fragment_cut, hash_bytes, iter_line_blocks

try:  # ~2x faster than json on long strings; optional: without it json does all the work
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a dependency, but a missing wheel must not break reading
    _fast_loads = None

__all__ = ["Batch", "ShardStats", "iter_shard"]

_log = logging.getLogger("gpu_bytepiece.pipeline")

_SURROGATE = re.compile("[\ud800-\udfff]")
_MISSING = object()
_BLANK_START = b" \t\r\x0b\x0c"


class _Reader:
    """What the readers share: the read parameters, and what to do with a bad record."""

    def __init__(self, inputs, params: dict, on_error: str, stats: ShardStats, want_table: bool):
        self.inputs = inputs
        self.text_key = params.get("text_key", "text")
        self.batch_bytes = int(params.get("batch_bytes") or (16 << 20))
        self.on_error = on_error
        self.stats = stats
        self.want_table = want_table
        self.max_record = int(params.get("max_record_bytes") or config.MAX_RECORD_BYTES)

    def too_large(self, inp: InputFile, size: int, where: dict) -> None:
        """A record (line) of ``size`` bytes over the cap: a bad record, read past unkept."""
        self.bad(DataError(inp.path, "too_large", f"{size:,} bytes, over the cap of {self.max_record:,} "
                           "(--max-record-bytes)", **where))

    def bad(self, err: DataError) -> None:
        if self.on_error == "fail":
            if err.line is None and err.offset is not None and err.path != "-":
                inp = next((x for x in self.inputs if x.path == err.path), None)
                if inp is not None and inp.compression is None:
                    err = DataError(err.path, err.reason, err.detail, line=count_lines(err.path, err.offset))
            raise err
        self.stats.skip(err)


class _JsonlReader(_Reader):
    """JSONL: one object per line, the text under ``text_key``; blank lines are counted."""

    def batches(self, inp: InputFile, start: int, end: int) -> Iterator[Batch]:
        src = Source(inp, max(start - 1, 0), self.stats.reads)
        numbered = start == 0  # line numbers known from the top of the stream
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
            for off, data in iter_line_blocks(src.read, start, None if end < 0 or inp.compression else end,
                                              max_line=self.max_record):
                if type(data) is LongLine:
                    line_no += 1
                    self.too_large(inp, data, dict(line=line_no) if numbered else dict(offset=off))
                    continue
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
                    if len(raw) > self.max_record:
                        self.too_large(inp, len(raw), dict(line=line_no) if numbered else dict(offset=here))
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
                        where = dict(line=line_no) if numbered else dict(offset=here)
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
            src.finish()
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
        except RecursionError:  # the depth is bounded by the interpreter's recursion limit
            self.bad(DataError(inp.path, "too_deep", f"more than {sys.getrecursionlimit()} levels", **where))
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
            try:
                meta = json.dumps(fields, ensure_ascii=escapes, separators=(",", ":")) if fields else None
            except RecursionError:
                self.bad(DataError(inp.path, "too_deep", f"more than {sys.getrecursionlimit()} levels", **where))
                return None
        return text, meta

    def _batch(self, texts, metas, consumed) -> Batch:
        table = None
        if self.want_table:
            import pyarrow as pa

            table = pa.table({self.text_key: pa.array(texts, pa.string()), "meta": pa.array(metas, pa.string())})
        self.stats.docs += len(texts)
        return Batch(texts, table=table, input_bytes=consumed)


class _TextLinesReader(_Reader):
    """Text, one document per line (without its ``\\n``)."""

    def batches(self, inp: InputFile, start: int, end: int) -> Iterator[Batch]:
        import pyarrow as pa

        src = Source(inp, max(start - 1, 0), self.stats.reads)
        numbered = start == 0
        line_no = 1
        try:
            for off, data in iter_line_blocks(src.read, start, None if end < 0 or inp.compression else end,
                                              block=min(max(self.batch_bytes, 1 << 16), 64 << 20),
                                              max_line=self.max_record):
                if type(data) is LongLine:
                    self.too_large(inp, data, dict(line=line_no) if numbered else dict(offset=off))
                    line_no += 1
                    continue
                a = np.frombuffer(data, dtype=np.uint8)
                nl = np.flatnonzero(a == 10)
                starts = np.concatenate(([0], nl + 1))
                ends = np.concatenate((nl, [len(a)]))
                if ends[-1] == starts[-1]:  # the block ends with \n: no unterminated last line
                    starts, ends = starts[:-1], ends[:-1]
                n = len(starts)
                keep = ends - starts <= self.max_record
                for k in np.flatnonzero(~keep):
                    self.too_large(inp, int(ends[k] - starts[k]),
                                   dict(line=line_no + int(k)) if numbered else dict(offset=off + int(starts[k])))
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    for k in np.flatnonzero(keep).tolist():
                        seg = data[starts[k]:ends[k]]
                        try:
                            seg.decode("utf-8")
                        except UnicodeDecodeError as e:
                            where = dict(line=line_no + k) if numbered else dict(offset=off + int(starts[k]))
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
            src.finish()
        finally:
            src.close()


class _TextFilesReader(_Reader):
    """Text, one document per file; big ones in fragments cut at segment ends."""

    def batches(self, parts) -> Iterator[Batch]:
        """Whole files as documents; big ones in fragments cut at segment ends."""
        pieces, starts, ends, size, consumed = [], [], [], 0, 0
        first_continues = abort = False
        doc_at = None  # index in `pieces` of the open document's first piece (None: an earlier batch)
        for inp in parts:
            src = Source(inp, 0, self.stats.reads)
            line_no, buf, eof, first = 1, b"", False, True
            try:
                while True:
                    while not eof and len(buf) <= config.TEXT_FRAGMENT_BYTES:
                        chunk = src.read(config.READ_BLOCK)
                        if chunk:
                            buf += chunk
                        else:
                            eof = True
                    cut = fragment_cut(buf, eof)
                    if cut is None:  # no segment end yet: read on
                        chunk = src.read(config.READ_BLOCK)
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
                src.finish()
                if inp.is_stdin and line_no > 2:  # more than one \n: likely many documents, one a line
                    _log.warning("note: standard input was read as one document (it holds %s line breaks); "
                                 "for one document a line, pass --split-lines", f"{line_no - 1:,}")
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


class _ParquetReader(_Reader):
    """Parquet: the string column ``text_key``, a range of row groups."""

    def batches(self, inp: InputFile, rg_start: int, rg_end: int) -> Iterator[Batch]:
        import pyarrow as pa

        pf = parquet_file(inp.path)
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
            self._finish(inp, md, rg_start, rg_end)
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
                raw = (arr.view(pa.large_binary()) if pa.types.is_large_string(arr.type)
                       else arr.cast(pa.large_binary()))
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
        self._finish(inp, md, rg_start, rg_end)

    def _finish(self, inp: InputFile, md, rg_start: int, rg_end: int) -> None:
        """Check the file did not change; record the hash of the row groups'
        raw bytes (their column chunks' span, read again here: Arrow decodes
        them out of sight; compressed column bytes, a small fraction of the
        work of decoding and tokenizing them)."""
        check_unchanged(inp)
        lo, hi = None, 0
        for g in range(rg_start, rg_end):
            rg = md.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                first = col.data_page_offset
                if col.has_dictionary_page and col.dictionary_page_offset:
                    first = min(first, col.dictionary_page_offset)
                lo = first if lo is None else min(lo, first)
                hi = max(hi, first + col.total_compressed_size)
        if lo is not None:
            self.stats.reads.append([inp.path, lo, hi - lo, hash_bytes(inp.path, lo, hi - lo)])


_READERS = {"jsonl": _JsonlReader, "text": _TextLinesReader, "parquet": _ParquetReader}


def iter_shard(inputs: list, shard: dict, params: dict, on_error: str, stats: ShardStats,
               want_table: bool = False) -> Iterator[Batch]:
    """Read one shard's documents as :class:`Batch` es (see :func:`.inputs.plan_shards`).

    ``params``: ``text_key``, ``split_lines``, ``batch_bytes``. Bad records
    raise :class:`DataError` (``on_error='fail'``) or are counted in
    ``stats`` (``'skip'``).
    """
    args = (inputs, params, on_error, stats, want_table)
    whole_text = []  # consecutive one-document text files, read by one reader
    for i, a, b in shard["parts"]:
        inp = inputs[i]
        if inp.kind == "text" and not params.get("split_lines"):
            whole_text.append(inp)
            continue
        if whole_text:
            yield from _TextFilesReader(*args).batches(whole_text)
            whole_text = []
        if inp.kind not in _READERS:  # pragma: no cover
            raise PipelineError(f"unknown input kind {inp.kind!r}")
        yield from _READERS[inp.kind](*args).batches(inp, a, b)
    if whole_text:
        yield from _TextFilesReader(*args).batches(whole_text)
