"""Output formats: writing a shard, joining shards (``merge``), reading back.

Every format is a dataset named by a prefix; a shard is a dataset of the
same format, so joining shards and ``gpu-bytepiece merge`` are one function.

==========  ====================================  ==================================
format      files                                 content
==========  ====================================  ==================================
megatron    ``PREFIX.bin``, ``PREFIX.idx``        Megatron-LM ``MMIDIDX`` version 1,
                                                  one sequence per document; ids
                                                  uint16 when vocab_size < 65500,
                                                  else int32
npy         ``PREFIX.ids.npy``,                   flat uint32 ids and int64 document
            ``PREFIX.offsets.npy``                offsets (``n + 1``, from 0): what
                                                  ``Tokenizer.encode_to_numpy`` returns
parquet     ``PREFIX.parquet``                    the input's columns + ``ids``
                                                  (``list<uint32>``)
jsonl       ``PREFIX.jsonl``                      ``{"ids":[...]}`` per line
==========  ====================================  ==================================

Files are written under a temporary name, fsync'd and renamed when complete,
so a file with a final name is always whole. Output bytes depend only on the
documents (and, for Parquet, on :data:`PARQUET_ROW_GROUP_BYTES`), never on
batch sizes, worker counts or devices.
"""

from __future__ import annotations

import json
import os
import shutil
import struct

import numpy as np

from .errors import PipelineError

__all__ = [
    "FORMATS", "output_files", "shard_writer", "merge_datasets", "read_dataset", "iter_documents",
    "read_megatron_index", "megatron_dtype", "PARQUET_ROW_GROUP_BYTES", "detect_format",
]

FORMATS = ("megatron", "npy", "parquet", "jsonl")

#: Parquet row groups end after the row whose text brings the group to at
#: least this many bytes (deterministic: independent of batch sizes).
PARQUET_ROW_GROUP_BYTES = 64 << 20
PARQUET_ROW_GROUP_ROWS = 1 << 20

_SUFFIXES = {
    "megatron": (".bin", ".idx"),
    "npy": (".ids.npy", ".offsets.npy"),
    "parquet": (".parquet",),
    "jsonl": (".jsonl",),
}

# Megatron-LM's indexed dataset (megatron/core/datasets/indexed_dataset.py)
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_VERSION = 1
MEGATRON_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
                   6: np.float64, 7: np.float32, 8: np.uint16}
_MEGATRON_CODES = {np.dtype(v): k for k, v in MEGATRON_DTYPES.items()}

_NPY_HEADER = 128  # fixed header size, so the shape can be written at the end


def output_files(prefix: str, fmt: str) -> list:
    """The files of a dataset: ``[PREFIX.bin, PREFIX.idx]`` etc."""
    if fmt not in _SUFFIXES:
        raise PipelineError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    return [prefix + s for s in _SUFFIXES[fmt]]


def detect_format(prefix: str) -> str:
    """The format of an existing dataset at ``prefix``."""
    found = [f for f in FORMATS if all(os.path.exists(p) for p in output_files(prefix, f))]
    if len(found) != 1:
        raise PipelineError(f"{prefix}: {'no' if not found else 'more than one'} dataset "
                            f"({', '.join(s for f in FORMATS for s in _SUFFIXES[f])}); pass --format")
    return found[0]


def megatron_dtype(vocab_size: int):
    """Megatron's choice: uint16 when the vocabulary has < 65500 ids, else int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


# ------------------------------------------------------------ file helpers
def fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def tmp_name(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


class _Staged:
    """Files written under temporary names, renamed together by ``commit``."""

    def __init__(self, finals):
        self.finals = list(finals)
        self.tmps = [tmp_name(p) for p in self.finals]

    def commit(self) -> dict:
        sizes = {}
        for tmp in self.tmps:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for tmp, final in zip(self.tmps, self.finals):
            os.replace(tmp, final)
            sizes[os.path.basename(final)] = os.path.getsize(final)
        fsync_dir(self.finals[0])
        return sizes

    def discard(self) -> None:
        for tmp in self.tmps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def _copy_file(src: str, dst_fd: int, skip: int = 0) -> int:
    """Append ``src[skip:]`` to ``dst_fd`` (kernel copy where possible)."""
    size = os.path.getsize(src) - skip
    with open(src, "rb") as f:
        fd = f.fileno()
        left, pos = size, skip
        if hasattr(os, "copy_file_range"):
            try:
                while left > 0:
                    n = os.copy_file_range(fd, dst_fd, min(left, 1 << 30), pos)
                    if n == 0:
                        break
                    left -= n
                    pos += n
            except OSError:
                pass
        if left > 0:
            f.seek(pos)
            with os.fdopen(os.dup(dst_fd), "wb", closefd=True) as out:
                shutil.copyfileobj(f, out, 8 << 20)
    return size


def _npy_header(dtype, shape) -> bytes:
    d = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    body = repr(d).encode("latin1")
    head = b"\x93NUMPY\x01\x00"
    pad = _NPY_HEADER - len(head) - 2 - len(body) - 1
    if pad < 0:  # pragma: no cover
        raise PipelineError("npy header too long")
    body = body + b" " * pad + b"\n"
    return head + struct.pack("<H", len(body)) + body


def _open_npy(path: str):
    """``(dtype, shape, data offset)`` of an .npy file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran:  # pragma: no cover
            raise PipelineError(f"{path}: Fortran-ordered arrays are not supported")
        return dtype, shape, f.tell()


# ------------------------------------------------------------ shard writers
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
    """Writes one dataset. ``write`` takes pieces of documents (see ``readers.Batch``)."""

    fmt = ""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.staged = _Staged(output_files(prefix, self.fmt))
        self.docs = 0
        self.tokens = 0

    def write(self, ids, offsets, *, table=None, first_continues=False, last_open=False) -> None:
        raise NotImplementedError

    def abort_open(self) -> None:
        raise NotImplementedError

    def close(self) -> dict:
        raise NotImplementedError

    def discard(self) -> None:
        self._close_files()
        self.staged.discard()

    def _close_files(self) -> None:
        pass


class MegatronWriter(ShardWriter):
    fmt = "megatron"

    def __init__(self, prefix: str, vocab_size: int, **_):
        super().__init__(prefix)
        self.dtype = megatron_dtype(vocab_size)
        self.bin = open(self.staged.tmps[0], "wb", buffering=8 << 20)
        self.lengths = []
        self.open_len = 0

    def write(self, ids, offsets, *, table=None, first_continues=False, last_open=False):
        n = len(offsets) - 1
        if n == 0:
            return
        if self.dtype != np.uint32:
            if self.dtype == np.uint16 and len(ids) and int(ids.max()) > 0xFFFF:  # pragma: no cover
                raise PipelineError("an id does not fit the Megatron uint16 dtype")
            data = ids.astype(self.dtype)
        else:  # pragma: no cover
            data = ids
        self.bin.write(memoryview(np.ascontiguousarray(data)).cast("B"))
        lens = np.diff(offsets)
        if first_continues:
            lens[0] += self.open_len
            self.open_len = 0
        if last_open:
            self.open_len = int(lens[-1])
            lens = lens[:-1]
        if len(lens) and int(lens.max()) > np.iinfo(np.int32).max:
            raise PipelineError("a document has more than 2**31 - 1 tokens: too long for Megatron's int32 lengths")
        self.lengths.append(lens.astype(np.int32))
        self.docs += len(lens)
        self.tokens += len(ids)

    def abort_open(self):
        if self.open_len:
            self.bin.flush()
            end = self.bin.tell() - self.open_len * self.dtype.itemsize
            self.bin.truncate(end)
            self.bin.seek(end)
            self.tokens -= self.open_len
            self.open_len = 0

    def close(self) -> dict:
        self.bin.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int32)
        with open(self.staged.tmps[1], "wb") as f:
            _write_megatron_index(f, self.dtype, [lengths], [np.arange(len(lengths) + 1, dtype=np.int64)])
        return self.staged.commit()

    def _close_files(self):
        self.bin.close()


def _write_megatron_index(f, dtype, lengths_parts, doc_parts) -> None:
    """Write an ``.idx``: header, int32 lengths, int64 byte pointers, int64 doc indices."""
    n_seq = sum(len(p) for p in lengths_parts)
    n_doc = sum(len(p) for p in doc_parts)
    f.write(MEGATRON_MAGIC)
    f.write(struct.pack("<Q", MEGATRON_VERSION))
    f.write(struct.pack("<B", _MEGATRON_CODES[np.dtype(dtype)]))
    f.write(struct.pack("<Q", n_seq))
    f.write(struct.pack("<Q", n_doc))
    for p in lengths_parts:
        f.write(np.ascontiguousarray(p, dtype="<i4").tobytes())
    pos = 0
    item = np.dtype(dtype).itemsize
    for p in lengths_parts:
        ptr = np.zeros(len(p), dtype="<i8")
        if len(p):
            np.cumsum(p[:-1].astype(np.int64) * item, out=ptr[1:])
            ptr += pos
            pos = int(ptr[-1]) + int(p[-1]) * item
        f.write(ptr.tobytes())
    for p in doc_parts:
        f.write(np.ascontiguousarray(p, dtype="<i8").tobytes())


class NpyWriter(ShardWriter):
    fmt = "npy"

    def __init__(self, prefix: str, **_):
        super().__init__(prefix)
        self.f = open(self.staged.tmps[0], "wb", buffering=8 << 20)
        self.f.write(b"\0" * _NPY_HEADER)
        self.lengths = []
        self.open_len = 0

    def write(self, ids, offsets, *, table=None, first_continues=False, last_open=False):
        n = len(offsets) - 1
        if n == 0:
            return
        self.f.write(memoryview(np.ascontiguousarray(ids, dtype="<u4")).cast("B"))
        lens = np.diff(offsets)
        if first_continues:
            lens[0] += self.open_len
            self.open_len = 0
        if last_open:
            self.open_len = int(lens[-1])
            lens = lens[:-1]
        self.lengths.append(lens.astype(np.int64))
        self.docs += len(lens)
        self.tokens += len(ids)

    def abort_open(self):
        if self.open_len:
            self.f.flush()
            end = self.f.tell() - self.open_len * 4
            self.f.truncate(end)
            self.f.seek(end)
            self.tokens -= self.open_len
            self.open_len = 0

    def close(self) -> dict:
        self.f.seek(0)
        self.f.write(_npy_header("<u4", (self.tokens,)))
        self.f.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype="<i8")
        np.cumsum(lengths, out=offsets[1:])
        with open(self.staged.tmps[1], "wb") as f:
            f.write(_npy_header("<i8", offsets.shape))
            f.write(offsets.tobytes())
        return self.staged.commit()

    def _close_files(self):
        self.f.close()


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


class JsonlWriter(ShardWriter):
    fmt = "jsonl"

    def __init__(self, prefix: str, **_):
        super().__init__(prefix)
        self.f = open(self.staged.tmps[0], "wb", buffering=8 << 20)
        self.open = _OpenDocs()

    def write(self, ids, offsets, *, table=None, first_continues=False, last_open=False):
        ids, offsets, _ = self.open.feed(ids, offsets, None, first_continues, last_open)
        self.f.write(jsonl_lines(ids, offsets))
        self.docs += len(offsets) - 1
        self.tokens += len(ids)

    def abort_open(self):
        self.open.abort()

    def close(self) -> dict:
        self.f.close()
        return self.staged.commit()

    def _close_files(self):
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


class ParquetWriter(ShardWriter):
    fmt = "parquet"

    def __init__(self, prefix: str, schema=None, text_key: str = "text", **_):
        import pyarrow.parquet as pq

        super().__init__(prefix)
        if schema is None:
            raise PipelineError("Parquet output needs the output schema")
        self.schema = schema
        self.text_key = text_key
        self.pw = pq.ParquetWriter(self.staged.tmps[0], schema)
        self.pending = []
        self.pending_bytes = 0
        self.pending_rows = 0
        self.open = _OpenDocs(text_key)

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
            row_cap = PARQUET_ROW_GROUP_ROWS - self.pending_rows
            hit = np.flatnonzero(cum >= PARQUET_ROW_GROUP_BYTES)
            stop = n if not len(hit) else start + int(hit[0]) + 1
            stop = min(stop, start + row_cap)
            self.pending.append(rows.slice(start, stop - start))
            self.pending_rows += stop - start
            self.pending_bytes = int(cum[stop - start - 1])
            if self.pending_rows >= PARQUET_ROW_GROUP_ROWS or self.pending_bytes >= PARQUET_ROW_GROUP_BYTES:
                self._flush()
            start = stop

    def _flush(self):
        import pyarrow as pa

        if self.pending:
            t = pa.concat_tables(self.pending).combine_chunks()
            if t.num_rows:
                self.pw.write_table(t, row_group_size=t.num_rows)
        self.pending, self.pending_bytes, self.pending_rows = [], 0, 0

    def abort_open(self):
        self.open.abort()

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


# ---------------------------------------------------------------- reading
def read_megatron_index(path: str) -> dict:
    """Read a Megatron ``.idx``: dtype, sequence lengths, pointers, document indices."""
    with open(path, "rb") as f:
        magic = f.read(9)
        if magic != MEGATRON_MAGIC:
            raise PipelineError(f"{path}: not a Megatron index (magic {magic!r})")
        version, = struct.unpack("<Q", f.read(8))
        if version != MEGATRON_VERSION:
            raise PipelineError(f"{path}: Megatron index version {version}, expected 1")
        code, = struct.unpack("<B", f.read(1))
        n_seq, = struct.unpack("<Q", f.read(8))
        n_doc, = struct.unpack("<Q", f.read(8))
        head = f.tell()
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    lengths = np.frombuffer(mm, dtype="<i4", count=n_seq, offset=head)
    pointers = np.frombuffer(mm, dtype="<i8", count=n_seq, offset=head + 4 * n_seq)
    docs = np.frombuffer(mm, dtype="<i8", count=n_doc, offset=head + 12 * n_seq)
    return {"dtype": np.dtype(MEGATRON_DTYPES[code]), "lengths": lengths, "pointers": pointers,
            "document_indices": docs}


def read_dataset(prefix: str, fmt: str | None = None):
    """``(ids, offsets)`` of a whole dataset (memory-mapped where the format allows).

    ``ids`` is uint32 for npy/parquet/jsonl and Megatron's dtype for megatron;
    ``offsets`` int64, one per document plus one.
    """
    fmt = fmt or detect_format(prefix)
    if fmt == "megatron":
        idx = read_megatron_index(prefix + ".idx")
        size = os.path.getsize(prefix + ".bin")
        ids = np.memmap(prefix + ".bin", dtype=idx["dtype"], mode="r") if size else np.zeros(0, idx["dtype"])
        offsets = np.zeros(len(idx["lengths"]) + 1, dtype=np.int64)
        np.cumsum(idx["lengths"], out=offsets[1:])
        return ids, offsets
    if fmt == "npy":
        return np.load(prefix + ".ids.npy", mmap_mode="r"), np.load(prefix + ".offsets.npy")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        col = pq.read_table(prefix + ".parquet", columns=["ids"]).column("ids").combine_chunks()
        offsets = np.asarray(col.offsets, dtype=np.int64)
        ids = np.asarray(col.values, dtype=np.uint32)[offsets[0]:offsets[-1]]
        return ids, offsets - offsets[0]
    if fmt == "jsonl":
        parts, lens = [], []
        with open(prefix + ".jsonl", "rb") as f:
            for line in f:
                a = json.loads(line)["ids"]
                parts.append(np.asarray(a, dtype=np.uint32))
                lens.append(len(a))
        offsets = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        ids = np.concatenate(parts) if parts else np.zeros(0, np.uint32)
        return ids, offsets
    raise PipelineError(f"unknown format {fmt!r}")


def iter_documents(prefix: str, fmt: str | None = None):
    """Yield each document's ids (a NumPy array)."""
    ids, offsets = read_dataset(prefix, fmt)
    for i in range(len(offsets) - 1):
        yield np.asarray(ids[offsets[i]:offsets[i + 1]])


# ---------------------------------------------------------------- merging
def merge_datasets(prefixes, out_prefix: str, fmt: str | None = None) -> dict:
    """Join datasets (in order) into one at ``out_prefix``; returns file sizes.

    Streams: memory holds one input's index at a time (Megatron, npy) or one
    row group (Parquet). The output is written under temporary names and
    renamed when complete.
    """
    prefixes = list(prefixes)
    if not prefixes:
        raise PipelineError("nothing to merge")
    fmt = fmt or detect_format(prefixes[0])
    for p in prefixes:
        for f in output_files(p, fmt):
            if not os.path.exists(f):
                raise PipelineError(f"{f}: missing (not a complete {fmt} dataset)")
    staged = _Staged(output_files(out_prefix, fmt))
    try:
        if fmt == "megatron":
            _merge_megatron(prefixes, staged)
        elif fmt == "npy":
            _merge_npy(prefixes, staged)
        elif fmt == "jsonl":
            with open(staged.tmps[0], "wb") as out:
                for p in prefixes:
                    _copy_file(p + ".jsonl", out.fileno())
        elif fmt == "parquet":
            _merge_parquet(prefixes, staged)
        else:  # pragma: no cover
            raise PipelineError(f"unknown format {fmt!r}")
        return staged.commit()
    except BaseException:
        staged.discard()
        raise


def _merge_megatron(prefixes, staged):
    dtype = None
    for p in prefixes:
        d = read_megatron_index(p + ".idx")["dtype"]
        if dtype is not None and d != dtype:
            raise PipelineError(f"{p}.idx: dtype {d} differs from {dtype} of the first dataset")
        dtype = d
    with open(staged.tmps[0], "wb") as out:
        for p in prefixes:
            _copy_file(p + ".bin", out.fileno())
    # header, then lengths, pointers and document indices: three passes, one index at a time
    n_seq = n_doc = 0
    for p in prefixes:
        idx = read_megatron_index(p + ".idx")
        n_seq += len(idx["lengths"])
        n_doc += len(idx["document_indices"]) - 1
    with open(staged.tmps[1], "wb", buffering=8 << 20) as f:
        f.write(MEGATRON_MAGIC)
        f.write(struct.pack("<QBQQ", MEGATRON_VERSION, _MEGATRON_CODES[dtype], n_seq, n_doc + 1))
        for p in prefixes:
            f.write(np.ascontiguousarray(read_megatron_index(p + ".idx")["lengths"]).tobytes())
        pos = 0
        for p in prefixes:
            idx = read_megatron_index(p + ".idx")
            f.write((idx["pointers"] + pos).astype("<i8").tobytes())
            pos += os.path.getsize(p + ".bin")
            del idx
        f.write(np.zeros(1, "<i8").tobytes())
        seq = 0
        for p in prefixes:
            idx = read_megatron_index(p + ".idx")
            f.write((idx["document_indices"][1:] + seq).astype("<i8").tobytes())
            seq += len(idx["lengths"])
            del idx


def _merge_npy(prefixes, staged):
    total = 0
    for p in prefixes:
        dtype, shape, _ = _open_npy(p + ".ids.npy")
        if dtype != np.dtype("<u4") or len(shape) != 1:
            raise PipelineError(f"{p}.ids.npy: expected a flat uint32 array, got {dtype} {shape}")
        total += shape[0]
    with open(staged.tmps[0], "wb") as out:
        out.write(_npy_header("<u4", (total,)))
        out.flush()
        for p in prefixes:
            _, _, head = _open_npy(p + ".ids.npy")
            _copy_file(p + ".ids.npy", out.fileno(), skip=head)
    n_docs = sum(len(np.load(p + ".offsets.npy", mmap_mode="r")) - 1 for p in prefixes)
    with open(staged.tmps[1], "wb", buffering=8 << 20) as f:
        f.write(_npy_header("<i8", (n_docs + 1,)))
        f.write(np.zeros(1, "<i8").tobytes())
        base = 0
        for p in prefixes:
            off = np.load(p + ".offsets.npy", mmap_mode="r")
            f.write((np.asarray(off[1:], dtype=np.int64) + base).astype("<i8").tobytes())
            base += int(off[-1])


def _merge_parquet(prefixes, staged):
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(p + ".parquet") for p in prefixes]
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise PipelineError(f"the Parquet datasets' columns cannot be joined: {e}") from None
    pw = pq.ParquetWriter(staged.tmps[0], schema)
    try:
        for p in prefixes:
            pf = pq.ParquetFile(p + ".parquet")
            for g in range(pf.metadata.num_row_groups):
                t = conform(pf.read_row_group(g), schema)
                pw.write_table(t, row_group_size=max(1, t.num_rows))
    finally:
        pw.close()
