"""Datasets on disk: reading them back, and joining them (``merge``).

Encode jobs join their shards with :func:`merge_datasets`, and
``gpu-bytepiece merge`` joins any datasets of one format with it too. The
output is written under temporary names and renamed when complete
(:class:`gpu_bytepiece.files.Staged`).
"""

from __future__ import annotations

import json
import os
import shutil
import struct

import numpy as np

from ..files import Staged, clean_tmp
from .errors import PipelineError
from .formats import (MEGATRON_DTYPES, MEGATRON_MAGIC, MEGATRON_VERSION, detect_format, megatron_header,
                      npy_header, open_npy, output_files)
from .writers import conform

__all__ = ["read_dataset", "iter_documents", "read_megatron_index", "validate_dataset", "merge_datasets"]


# ---------------------------------------------------------------- reading
def read_megatron_index(path: str) -> dict:
    """Read a Megatron ``.idx``: dtype, sequence lengths, pointers, document indices.

    The header must be whole and the file exactly as long as it says."""
    with open(path, "rb") as f:
        magic = f.read(9)
        if magic != MEGATRON_MAGIC:
            raise PipelineError(f"{path}: not a Megatron index (magic {magic!r})")
        head = f.read(25)
        if len(head) != 25:
            raise PipelineError(f"{path}: truncated Megatron index header ({9 + len(head)} of 34 bytes)")
        version, code, n_seq, n_doc = struct.unpack("<QBQQ", head)
        if version != MEGATRON_VERSION:
            raise PipelineError(f"{path}: Megatron index version {version}, expected 1")
        if code not in MEGATRON_DTYPES:
            raise PipelineError(f"{path}: unknown Megatron dtype code {code}")
        head = f.tell()
    want = head + 12 * n_seq + 8 * n_doc
    if os.path.getsize(path) != want:
        raise PipelineError(f"{path}: {os.path.getsize(path):,} bytes, but its header ({n_seq:,} sequences, "
                            f"{n_doc:,} document indices) makes it {want:,}: truncated or corrupt")
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


# ------------------------------------------------------------- validating
def _check(ok, path: str, what: str) -> None:
    if not ok:
        raise PipelineError(f"{path}: {what}: truncated or corrupt; re-create the dataset")


def validate_dataset(prefix: str, fmt: str) -> None:
    """Raise :class:`PipelineError` (naming the file) unless ``prefix`` is a
    whole dataset of ``fmt``: Megatron: index header and size, lengths,
    pointers inside ``.bin`` and following each other, document indices, the
    ``.bin`` size; npy: headers, sizes, offsets from 0 to the ids' count,
    never decreasing; Parquet: a readable file with a ``list<uint32>``
    ``ids`` column; JSONL: ends with a newline, first and last lines hold
    ``{"ids": [...]}`` (a cheaper check: a full parse would read every id).
    """
    if fmt == "megatron":
        idx = read_megatron_index(prefix + ".idx")
        lengths, pointers, docs = idx["lengths"], idx["pointers"], idx["document_indices"]
        size = os.path.getsize(prefix + ".bin")
        item = idx["dtype"].itemsize
        path = prefix + ".idx"
        _check((lengths >= 0).all(), path, "negative sequence length")
        if len(lengths):
            ends = pointers + lengths.astype(np.int64) * item
            _check(pointers[0] == 0 and (pointers[1:] == ends[:-1]).all(), path, "pointers do not follow each other")
            _check(ends[-1] == size, prefix + ".bin",
                   f"{size:,} bytes, but the index points to {int(ends[-1]):,}")
        else:
            _check(size == 0, prefix + ".bin", "not empty, but the index holds no sequence")
        _check(len(docs) >= 1 and docs[0] == 0 and docs[-1] == len(lengths) and (np.diff(docs) >= 0).all(),
               path, "document indices do not run from 0 to the sequence count")
    elif fmt == "npy":
        dtype, shape, head = open_npy(prefix + ".ids.npy")
        _check(dtype == np.dtype("<u4") and len(shape) == 1, prefix + ".ids.npy", f"not a flat uint32 array ({dtype} {shape})")
        _check(os.path.getsize(prefix + ".ids.npy") == head + 4 * shape[0], prefix + ".ids.npy",
               f"{os.path.getsize(prefix + '.ids.npy'):,} bytes, its header says {head + 4 * shape[0]:,}")
        odt, oshape, ohead = open_npy(prefix + ".offsets.npy")
        path = prefix + ".offsets.npy"
        _check(odt == np.dtype("<i8") and len(oshape) == 1 and oshape[0] >= 1, path, f"not int64 offsets ({odt} {oshape})")
        _check(os.path.getsize(path) == ohead + 8 * oshape[0], path, "size differs from its header")
        off = np.load(path, mmap_mode="r")
        _check(off[0] == 0 and off[-1] == shape[0] and (np.diff(off) >= 0).all(), path,
               f"offsets do not run from 0 to the {shape[0]:,} ids, never decreasing")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = pq.ParquetFile(prefix + ".parquet").schema_arrow
        except (pa.ArrowException, OSError) as e:
            raise PipelineError(f"{prefix}.parquet: not a readable Parquet file ({e})") from None
        _check("ids" in schema.names and schema.field("ids").type == pa.list_(pa.uint32()), prefix + ".parquet",
               "no list<uint32> 'ids' column")
    elif fmt == "jsonl":
        path = prefix + ".jsonl"
        size = os.path.getsize(path)
        if size:
            with open(path, "rb") as f:
                first = f.readline()
                f.seek(max(0, size - (1 << 20)))
                last = f.read().rsplit(b"\n", 2)
            for line in (first, (last[-2] if len(last) > 1 else b"") + b"\n"):
                try:
                    ok = line.endswith(b"\n") and isinstance(json.loads(line).get("ids"), list)
                except (ValueError, AttributeError):
                    ok = False
                _check(ok, path, "a line is not {\"ids\": [...]} ended by a newline")
    else:  # pragma: no cover
        raise PipelineError(f"unknown format {fmt!r}")


# ---------------------------------------------------------------- merging
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


def merge_datasets(prefixes, out_prefix: str, fmt: str | None = None, allow_duplicates: bool = False) -> dict:
    """Join datasets (in order) into one at ``out_prefix``; returns file sizes.

    Every input is validated first (:func:`validate_dataset`); the same
    dataset twice is refused unless ``allow_duplicates``. Streams: memory
    holds one input's index at a time (Megatron, npy) or one row group
    (Parquet). The output is written under temporary names (renamed when
    complete); those a killed merge left are removed first.
    """
    prefixes = list(prefixes)
    if not prefixes:
        raise PipelineError("nothing to merge")
    fmt = fmt or detect_format(prefixes[0])
    seen = {}
    for p in prefixes:
        for f in output_files(p, fmt):
            if not os.path.exists(f):
                try:
                    other = detect_format(p)
                except PipelineError:
                    raise PipelineError(f"{f}: missing (not a complete {fmt} dataset)") from None
                raise PipelineError(f"{p} is a {other} dataset, not {fmt}: merge datasets of one format "
                                    "(or encode again with --format)") from None
        key = os.path.realpath(output_files(p, fmt)[0])
        if key in seen and not allow_duplicates:
            raise PipelineError(f"{p} is given twice (as {seen[key]} too); pass --allow-duplicates to "
                                "repeat a dataset")
        seen[key] = p
        validate_dataset(p, fmt)
    finals = output_files(out_prefix, fmt)
    if set(map(os.path.realpath, finals)) & {os.path.realpath(f) for p in prefixes for f in output_files(p, fmt)}:
        raise PipelineError(f"{out_prefix} is also an input of the merge; choose another output")
    clean_tmp(finals)
    staged = Staged(finals)
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
    except OSError as e:
        staged.discard()
        raise PipelineError(f"{out_prefix}: cannot write the {fmt} dataset ({e.strerror or e}); free space "
                            "there, or choose another output, then rerun") from None
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
        f.write(megatron_header(dtype, n_seq, n_doc + 1))
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
        dtype, shape, _ = open_npy(p + ".ids.npy")
        if dtype != np.dtype("<u4") or len(shape) != 1:
            raise PipelineError(f"{p}.ids.npy: expected a flat uint32 array, got {dtype} {shape}")
        total += shape[0]
    with open(staged.tmps[0], "wb") as out:
        out.write(npy_header("<u4", (total,)))
        out.flush()
        for p in prefixes:
            _, _, head = open_npy(p + ".ids.npy")
            _copy_file(p + ".ids.npy", out.fileno(), skip=head)
    n_docs = sum(len(np.load(p + ".offsets.npy", mmap_mode="r")) - 1 for p in prefixes)
    with open(staged.tmps[1], "wb", buffering=8 << 20) as f:
        f.write(npy_header("<i8", (n_docs + 1,)))
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
