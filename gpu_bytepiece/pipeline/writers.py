"""Writing datasets: one writer per output format (see :mod:`.formats`).

A writer takes batches of tokenized documents (``readers.Batch`` after
tokenizing); a batch's last document may go on in the next batch
(``last_open``/``first_continues``) and may then turn out bad
(``abort_open``). Megatron and npy append ids to one flat file and keep the
lengths (:class:`_FlatWriter`); JSONL and Parquet need whole documents and
hold the open one back (:class:`_WholeDocWriter`).

Files are written under temporary names and renamed when complete
(:class:`gpu_bytepiece.files.Staged`), so a file with a final name is always
whole. Output bytes depend only on the documents (and, for Parquet, on
``config.PARQUET_ROW_GROUP_BYTES``), never on batch sizes, worker counts or
devices.
"""

from __future__ import annotations

import numpy as np

from .. import config
from ..files import Staged
from .errors import PipelineError
from .formats import FORMATS, NPY_HEADER, megatron_dtype, megatron_header, npy_header, output_files

__all__ = ["shard_writer", "ShardWriter", "JsonlWriter", "jsonl_lines", "ids_array", "conform"]


class _OpenDocs:
    """Joins the pieces of a document that spans batches (formats that need whole documents)."""

    def __init__(self, text_key=None):
        self.ids = []
        self.texts = []
        self.text_key = text_key

    def feed(self, ids, offsets, table, first_continues, last_open):
        n = len(offsets) - 1
        if n == 0:
            return ids, offsets, table
        if first_continues and self.ids:
            head = self.ids
            ids = np.concatenate(head + [ids])
            offsets = offsets + sum(len(h) for h in head)
            offsets[0] = 0
            if table is not None:
                table = self._join_first(table)
            self.ids, self.texts = [], []
        if last_open:
            a = int(offsets[-2])
            self.ids = [ids[a:].copy()]
            ids, offsets = ids[:a], offsets[:-1]
            if table is not None:
                self.texts = [table.column(self.text_key)[n - 1].as_py()]
                table = table.slice(0, n - 1)
        return ids, offsets, table

    def _join_first(self, table):
        import pyarrow as pa

        col = table.column(self.text_key)
        joined = "".join(self.texts + [col[0].as_py()])
        new = pa.concat_arrays([pa.array([joined], col.type)] + [c for c in col.slice(1).chunks])
        return table.set_column(table.schema.get_field_index(self.text_key), self.text_key, new)

    def abort(self):
        self.ids, self.texts = [], []


class ShardWriter:
    """Writes one dataset at ``prefix`` (None: a stream with no files, see
    :class:`JsonlWriter`). ``write`` takes pieces of documents (see ``readers.Batch``)."""

    fmt = ""

    def __init__(self, prefix: str | None):
        self.prefix = prefix
        self.staged = Staged(output_files(prefix, self.fmt)) if prefix is not None else None
        self.docs = 0
        self.tokens = 0

    def write(self, ids, offsets, *, table=None, first_continues=False, last_open=False) -> None:
        raise NotImplementedError

    def abort_open(self) -> None:
        raise NotImplementedError

    def close(self) -> dict:
        """Finish the files and give them their final names; returns ``{name: size}``."""
        raise NotImplementedError

    def discard(self) -> None:
        self._close_files()
        if self.staged is not None:
            self.staged.discard()

    def _close_files(self) -> None:
        pass


class _FlatWriter(ShardWriter):
    """Ids appended to one file of ``dtype`` items (after ``head``), and each
    document's length; an open document's ids are cut off if it turns out bad."""

    length_dtype = np.int64

    def __init__(self, prefix: str, dtype, head: bytes = b""):
        super().__init__(prefix)
        self.dtype = np.dtype(dtype)
        self.f = open(self.staged.tmps[0], "wb", buffering=8 << 20)
        self.f.write(head)
        self.lengths = []
        self.open_len = 0

    def _check(self, ids, lens) -> None:
        """Raise when the format cannot hold these ids or lengths."""

    def write(self, ids, offsets, *, table=None, first_continues=False, last_open=False):
        n = len(offsets) - 1
        if n == 0:
            return
        lens = np.diff(offsets)
        self._check(ids, lens)
        self.f.write(memoryview(np.ascontiguousarray(ids, dtype=self.dtype)).cast("B"))
        if first_continues:
            lens[0] += self.open_len
            self.open_len = 0
        if last_open:
            self.open_len = int(lens[-1])
            lens = lens[:-1]
        self.lengths.append(lens.astype(self.length_dtype))
        self.docs += len(lens)
        self.tokens += len(ids)

    def abort_open(self):
        if self.open_len:
            self.f.flush()
            end = self.f.tell() - self.open_len * self.dtype.itemsize
            self.f.truncate(end)
            self.f.seek(end)
            self.tokens -= self.open_len
            self.open_len = 0

    def _all_lengths(self):
        return np.concatenate(self.lengths) if self.lengths else np.zeros(0, self.length_dtype)

    def _close_files(self):
        self.f.close()


class MegatronWriter(_FlatWriter):
    fmt = "megatron"
    length_dtype = np.int32

    def __init__(self, prefix: str, vocab_size: int, **_):
        super().__init__(prefix, megatron_dtype(vocab_size))

    def _check(self, ids, lens):
        if self.dtype == np.uint16 and len(ids) and int(ids.max()) > 0xFFFF:  # pragma: no cover
            raise PipelineError("an id does not fit the Megatron uint16 dtype")
        if len(lens) and int(lens.max()) > np.iinfo(np.int32).max:
            raise PipelineError("a document has more than 2**31 - 1 tokens: too long for Megatron's int32 lengths")

    def close(self) -> dict:
        self.f.close()
        lengths = self._all_lengths()
        n = len(lengths)
        pointers = np.zeros(n, dtype="<i8")
        if n:
            np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        with open(self.staged.tmps[1], "wb") as f:
            f.write(megatron_header(self.dtype, n, n + 1))  # one sequence per document
            f.write(np.ascontiguousarray(lengths, dtype="<i4").tobytes())
            f.write(pointers.tobytes())
            f.write(np.arange(n + 1, dtype="<i8").tobytes())
        return self.staged.commit()


class NpyWriter(_FlatWriter):
    fmt = "npy"

    def __init__(self, prefix: str, **_):
        super().__init__(prefix, "<u4", head=b"\0" * NPY_HEADER)

    def close(self) -> dict:
        self.f.seek(0)
        self.f.write(npy_header("<u4", (self.tokens,)))
        self.f.close()
        lengths = self._all_lengths()
        offsets = np.zeros(len(lengths) + 1, dtype="<i8")
        np.cumsum(lengths, out=offsets[1:])
        with open(self.staged.tmps[1], "wb") as f:
            f.write(npy_header("<i8", offsets.shape))
            f.write(offsets.tobytes())
        return self.staged.commit()


class _WholeDocWriter(ShardWriter):
    """Formats written a whole document at a time: the open one is held back."""

    def __init__(self, prefix: str | None, text_key=None):
        super().__init__(prefix)
        self.open = _OpenDocs(text_key)

    def abort_open(self):
        self.open.abort()


_DIGITS = np.array([10 ** k for k in range(1, 10)], dtype=np.uint64)
_PREFIX = np.frombuffer(b'{"ids":[', dtype=np.uint8)


def jsonl_lines(ids, offsets) -> bytes:
    """``{"ids":[...]}\\n`` per document, formatted with NumPy (no per-id Python)."""
    n = len(offsets) - 1
    if n == 0:
        return b""
    ids = np.asarray(ids, dtype=np.uint64)
    nd = 1 + np.searchsorted(_DIGITS, ids, side="right").astype(np.int64)  # decimal digits
    counts = np.diff(offsets)
    width = nd + 1  # digits and a comma
    doc_of = np.repeat(np.arange(n), counts)
    per_doc = np.bincount(doc_of, weights=width, minlength=n).astype(np.int64) if len(ids) else np.zeros(n, np.int64)
    line_len = 8 + per_doc + np.where(counts > 0, 2, 3)
    line_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(line_len, out=line_start[1:])
    buf = np.empty(int(line_start[-1]), dtype=np.uint8)
    buf[(line_start[:-1, None] + np.arange(8)).ravel()] = np.tile(_PREFIX, n)
    if len(ids):
        tok_start = np.zeros(len(ids), dtype=np.int64)
        np.cumsum(width[:-1], out=tok_start[1:])
        first_tok = offsets[:-1]
        # shift each document's run of tokens to its line
        base = line_start[:-1] + 8 - np.where(counts > 0, tok_start[np.minimum(first_tok, len(ids) - 1)], 0)
        tok_start += base[doc_of]
        v = ids.copy()
        for k in range(int(nd.max())):
            m = nd > k
            buf[tok_start[m] + nd[m] - 1 - k] = (48 + v[m] % 10).astype(np.uint8)
            v[m] //= 10
        buf[tok_start + nd] = ord(",")
    ends = line_start[1:]
    full = counts > 0
    buf[ends[full] - 3] = ord("]")
    buf[ends[full] - 2] = ord("}")
    buf[ends[full] - 1] = ord("\n")
    empty = ~full
    buf[ends[empty] - 3] = ord("]")
    buf[ends[empty] - 2] = ord("}")
    buf[ends[empty] - 1] = ord("\n")
    return buf.tobytes()


class JsonlWriter(_WholeDocWriter):
    """``{"ids":[...]}`` lines, to ``PREFIX.jsonl``, or to the binary stream
    ``out`` (``--output -``; no files then, and ``close`` only flushes)."""

    fmt = "jsonl"

    def __init__(self, prefix: str | None, out=None, **_):
        super().__init__(prefix if out is None else None)
        self.f = open(self.staged.tmps[0], "wb", buffering=8 << 20) if out is None else out

    def write(self, ids, offsets, *, table=None, first_continues=False, last_open=False):
        ids, offsets, _ = self.open.feed(ids, offsets, None, first_continues, last_open)
        self.f.write(jsonl_lines(ids, offsets))
        self.docs += len(offsets) - 1
        self.tokens += len(ids)

    def close(self) -> dict:
        if self.staged is None:
            self.f.flush()
            return {}
        self.f.close()
        return self.staged.commit()

    def _close_files(self):
        if self.staged is not None:
            self.f.close()


def ids_array(ids, offsets):
    """A pyarrow ``list<uint32>`` array from flat ids and offsets."""
    import pyarrow as pa

    otype = np.int32 if len(ids) < (1 << 31) else np.int64
    off = pa.array(np.asarray(offsets, dtype=otype))
    values = pa.array(np.asarray(ids, dtype=np.uint32), pa.uint32())
    if otype == np.int32:
        return pa.ListArray.from_arrays(off, values)
    return pa.LargeListArray.from_arrays(off, values)  # pragma: no cover


def conform(table, schema):
    """``table`` with ``schema``'s columns in order: missing ones null, types cast."""
    import pyarrow as pa

    cols = []
    n = table.num_rows
    for f in schema:
        i = table.schema.get_field_index(f.name)
        if i < 0:
            cols.append(pa.nulls(n, f.type))
        else:
            c = table.column(i)
            cols.append(c if c.type == f.type else c.cast(f.type))
    return pa.Table.from_arrays(cols, schema=schema)


class ParquetWriter(_WholeDocWriter):
    fmt = "parquet"

    def __init__(self, prefix: str, schema=None, text_key: str = "text", **_):
        import pyarrow.parquet as pq

        super().__init__(prefix, text_key)
        if schema is None:
            raise PipelineError("Parquet output needs the output schema")
        self.schema = schema
        self.text_key = text_key
        self.pw = pq.ParquetWriter(self.staged.tmps[0], schema)
        self.pending = []
        self.pending_bytes = 0
        self.pending_rows = 0

    def write(self, ids, offsets, *, table=None, first_continues=False, last_open=False):
        import pyarrow.compute as pc

        if table is None:
            raise PipelineError("Parquet output needs the input rows")
        ids, offsets, table = self.open.feed(ids, offsets, table, first_continues, last_open)
        n = len(offsets) - 1
        if n == 0:
            return
        offsets = offsets - offsets[0]
        rows = table.append_column("ids", ids_array(ids, offsets))
        rows = conform(rows, self.schema)
        self.docs += n
        self.tokens += len(ids)
        lens = np.asarray(pc.binary_length(rows.column(self.text_key)).fill_null(0), dtype=np.int64) \
            if self.schema.get_field_index(self.text_key) >= 0 else np.zeros(n, np.int64)
        start = 0
        while start < n:
            cum = self.pending_bytes + np.cumsum(lens[start:])
            row_cap = config.PARQUET_ROW_GROUP_ROWS - self.pending_rows
            hit = np.flatnonzero(cum >= config.PARQUET_ROW_GROUP_BYTES)
            stop = n if not len(hit) else start + int(hit[0]) + 1
            stop = min(stop, start + row_cap)
            self.pending.append(rows.slice(start, stop - start))
            self.pending_rows += stop - start
            self.pending_bytes = int(cum[stop - start - 1])
            if (self.pending_rows >= config.PARQUET_ROW_GROUP_ROWS
                    or self.pending_bytes >= config.PARQUET_ROW_GROUP_BYTES):
                self._flush()
            start = stop

    def _flush(self):
        import pyarrow as pa

        if self.pending:
            t = pa.concat_tables(self.pending).combine_chunks()
            if t.num_rows:
                self.pw.write_table(t, row_group_size=t.num_rows)
        self.pending, self.pending_bytes, self.pending_rows = [], 0, 0

    def close(self) -> dict:
        self._flush()
        self.pw.close()
        return self.staged.commit()

    def _close_files(self):
        try:
            self.pw.close()
        except Exception:  # pragma: no cover
            pass


_WRITERS = {"megatron": MegatronWriter, "npy": NpyWriter, "jsonl": JsonlWriter, "parquet": ParquetWriter}


def shard_writer(fmt: str, prefix: str, *, vocab_size: int, schema=None, text_key: str = "text") -> ShardWriter:
    """A writer for one dataset at ``prefix`` (files under temporary names until ``close``)."""
    if fmt not in _WRITERS:
        raise PipelineError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    return _WRITERS[fmt](prefix, vocab_size=vocab_size, schema=schema, text_key=text_key)
