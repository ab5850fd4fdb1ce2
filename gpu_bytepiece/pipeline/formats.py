"""Output formats: names, file suffixes, and the on-disk layouts writers and readers share.

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

Every format is a dataset named by a prefix. Writing is in
:mod:`.writers`; reading back and joining (``merge``) in :mod:`.datasets`.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from .errors import PipelineError

__all__ = [
    "FORMATS", "output_files", "detect_format", "infer_format", "strip_suffix", "megatron_dtype",
    "MEGATRON_MAGIC", "MEGATRON_VERSION", "MEGATRON_DTYPES", "megatron_header", "npy_header", "open_npy",
]

FORMATS = ("megatron", "npy", "parquet", "jsonl")

_SUFFIXES = {
    "megatron": (".bin", ".idx"),
    "npy": (".ids.npy", ".offsets.npy"),
    "parquet": (".parquet",),
    "jsonl": (".jsonl",),
}

#: Suffixes of ``--output`` that name a format (and are dropped from the prefix).
_OUTPUT_SUFFIXES = (".ids.npy", ".offsets.npy", ".bin", ".idx", ".npy", ".parquet", ".jsonl")
_SUFFIX_FORMATS = {s: f for f, ss in _SUFFIXES.items() for s in ss} | {".npy": "npy"}


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


def strip_suffix(path: str) -> str:
    """A dataset's prefix from one of its files (``d.idx`` -> ``d``); others unchanged."""
    for s in (s for ss in _SUFFIXES.values() for s in ss):
        if path.endswith(s):
            return path[: -len(s)]
    return path


def infer_format(output: str, fmt: str | None) -> tuple[str, str]:
    """``(format, prefix)``: the format from ``--format`` or the output's suffix, the
    prefix without a suffix that names the format (``out.jsonl`` -> ``out``)."""
    if output == "-":
        fmt = fmt or "jsonl"
        if fmt != "jsonl":
            raise PipelineError(f"only jsonl can be written to standard output, not {fmt}")
        return fmt, output
    low = output.lower()
    guess = None
    for suffix in _OUTPUT_SUFFIXES:
        if low.endswith(suffix):
            guess = _SUFFIX_FORMATS[suffix]
            if fmt is None or fmt == guess:
                output = output[: -len(suffix)]
            break
    fmt = fmt or guess or "megatron"
    if not output or output.endswith(("/", os.sep)) or os.path.basename(output) in (".", ".."):
        raise PipelineError(f"--output {output!r} names no dataset: give a prefix such as out/data "
                            "(the files are PREFIX.bin, PREFIX.idx, ...)")
    if fmt not in FORMATS:
        raise PipelineError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    return fmt, output


# --------------------------------------------------------------- Megatron
# Megatron-LM's indexed dataset (megatron/core/datasets/indexed_dataset.py)
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_VERSION = 1
MEGATRON_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
                   6: np.float64, 7: np.float32, 8: np.uint16}
MEGATRON_CODES = {np.dtype(v): k for k, v in MEGATRON_DTYPES.items()}


def megatron_dtype(vocab_size: int):
    """Megatron's choice: uint16 when the vocabulary has < 65500 ids, else int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def megatron_header(dtype, n_seq: int, n_doc: int) -> bytes:
    """An ``.idx`` header: magic, version, dtype code, sequence and document-index counts."""
    return MEGATRON_MAGIC + struct.pack("<QBQQ", MEGATRON_VERSION, MEGATRON_CODES[np.dtype(dtype)], n_seq, n_doc)


# -------------------------------------------------------------------- npy
NPY_HEADER = 128  # fixed header size, so the shape can be written at the end


def npy_header(dtype, shape) -> bytes:
    """A version 1.0 ``.npy`` header padded to :data:`NPY_HEADER` bytes."""
    d = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    body = repr(d).encode("latin1")
    head = b"\x93NUMPY\x01\x00"
    pad = NPY_HEADER - len(head) - 2 - len(body) - 1
    if pad < 0:  # pragma: no cover
        raise PipelineError("npy header too long")
    body = body + b" " * pad + b"\n"
    return head + struct.pack("<H", len(body)) + body


def open_npy(path: str):
    """``(dtype, shape, data offset)`` of an .npy file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran:  # pragma: no cover
            raise PipelineError(f"{path}: Fortran-ordered arrays are not supported")
        return dtype, shape, f.tell()
