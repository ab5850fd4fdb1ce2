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

from ..files import Staged
from .errors import PipelineError
from .formats import (MEGATRON_DTYPES, MEGATRON_MAGIC, MEGATRON_VERSION, detect_format, megatron_header,
                      npy_header, open_npy, output_files)
from .writers import conform

__all__ = ["read_dataset", "iter_documents", "read_megatron_index", "merge_datasets"]


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
    staged = Staged(output_files(out_prefix, fmt))
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
