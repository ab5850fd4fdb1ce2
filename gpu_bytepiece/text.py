"""Turning user texts into one flat UTF-8 buffer plus document offsets.

The rules (BytePiece's, made total):

- ``str``: NFC-normalized, then UTF-8 encoded. A ``str`` holding a lone
  surrogate (``"\\ud800"``) has no UTF-8 encoding: it raises
  :class:`TextError` naming the document and position (the reference raises
  ``UnicodeEncodeError`` too).
- ``bytes`` / ``bytearray`` / ``memoryview``: taken as UTF-8. Valid UTF-8 runs
  are NFC-normalized; bytes that are not valid UTF-8 are kept verbatim, in
  place, and tokenized as raw single bytes (every byte is a piece), never
  dropped. Decoding such ids gives those bytes back with
  ``decode(ids, errors="surrogateescape")`` on ``decode_bytes``.
- ``pyarrow`` arrays (or chunked arrays) of type string, large_string,
  string_view, binary, large_binary or binary_view: as ``str`` / ``bytes``
  above, read from Arrow's buffers without one Python object per row (view
  types are first cast to their large twin); nulls raise :class:`TextError`
  (no silent loss). Any other Arrow object (another type, a table, a scalar)
  raises :class:`TextError`.

Pure ASCII needs no normalization and takes a fast path with no per-document
Python work beyond the join.
"""

from __future__ import annotations

import bisect
import itertools
import unicodedata
from typing import Iterator

import numpy as np

__all__ = ["TextError", "pack_texts", "iter_packed", "normalize_bytes", "normalize_str"]


#: ``iter_packed`` normalizes at most this many documents at a time.
_BLOCK_DOCS = 1024


class TextError(ValueError):
    """An input text cannot be tokenized (wrong type, null, lone surrogate)."""


def normalize_str(text: str, index: int = 0) -> bytes:
    """NFC then UTF-8; a lone surrogate raises :class:`TextError`."""
    if text.isascii():
        return text.encode("ascii")
    text = unicodedata.normalize("NFC", text)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TextError(
            f"text {index}: lone surrogate {text[e.start]!r} at character {e.start} "
            "has no UTF-8 encoding (pass bytes, or fix the text)"
        ) from None


def normalize_bytes(data: bytes) -> bytes:
    """NFC of the valid UTF-8 runs; invalid bytes kept verbatim in place."""
    if data.isascii():
        return bytes(data)
    text = data.decode("utf-8", "surrogateescape")
    if unicodedata.is_normalized("NFC", text):
        return bytes(data)
    return unicodedata.normalize("NFC", text).encode("utf-8", "surrogateescape")


def _normalize_any(t, i: int) -> bytes:
    if type(t) is str:
        return normalize_str(t, i)
    if isinstance(t, (bytes, bytearray, memoryview)):
        return normalize_bytes(bytes(t))
    if isinstance(t, str):
        return normalize_str(str(t), i)
    raise TextError(f"text {i}: expected str or bytes, got {type(t).__name__}")


_NFC = unicodedata.normalize


def _normalize_many(docs, first: int) -> list:
    """:func:`_normalize_any` of each document (``first``: the index of ``docs[0]``).

    When all are ``str`` and encode, one comprehension of two C calls per
    document (``normalize`` returns its input when it is NFC, so ASCII and
    most text costs a check and a copy), no Python frame per document;
    otherwise the per-document path, which names the bad document.
    """
    try:
        return [_NFC("NFC", t).encode() for t in docs]
    except (TypeError, UnicodeEncodeError):
        return [_normalize_any(t, first + k) for k, t in enumerate(docs)]


def _join(parts: list) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    if parts:
        np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)), out=offsets[1:])
    data = np.frombuffer(b"".join(parts), dtype=np.uint8)
    return data, offsets


def _is_arrow(obj) -> bool:
    mod = type(obj).__module__
    return mod.startswith("pyarrow")


def _arrow_array(obj):
    """One Arrow array of string, large_string, binary or large_binary from
    an Arrow array or chunked array of a text or binary type (views cast to
    their large twin); anything else raises :class:`TextError`."""
    import pyarrow as pa

    if not isinstance(obj, (pa.Array, pa.ChunkedArray)):
        raise TextError(f"expected a pyarrow string or binary array, got a pyarrow {type(obj).__name__}")
    t = obj.type
    views = {"string_view": pa.large_string(), "binary_view": pa.large_binary()}
    if str(t) in views:
        obj, t = obj.cast(views[str(t)]), views[str(t)]
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        raise TextError(f"expected a pyarrow string or binary array, got {t}")
    if isinstance(obj, pa.ChunkedArray):
        obj = obj.combine_chunks() if obj.num_chunks != 1 else obj.chunk(0)
    return obj


def _pack_arrow(arr, first_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pack one Arrow array; ``first_index`` is its first row's index in the input (for messages)."""
    import pyarrow as pa

    arr = _arrow_array(arr)
    t = arr.type
    is_text = pa.types.is_string(t) or pa.types.is_large_string(t)
    if arr.null_count:
        first = int(np.flatnonzero(np.asarray(arr.is_null()))[0]) + first_index
        raise TextError(f"text {first}: null in the input array ({arr.null_count} nulls)")
    off_type = np.int64 if (pa.types.is_large_string(t) or pa.types.is_large_binary(t)) else np.int32
    bufs = arr.buffers()
    n = len(arr)
    offsets = np.frombuffer(bufs[1], dtype=off_type, count=n + 1 + arr.offset)[arr.offset:].astype(np.int64)
    values = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    data = values[offsets[0]: offsets[-1]]
    offsets = offsets - offsets[0]
    if n == 0 or not (data >= 0x80).any():
        return data, offsets
    if is_text:
        # One check for the whole array: when the documents' text put end to end
        # is NFC, each document's is (whether a character is NFC depends on it
        # and those before it), and the bytes stay as they are.
        try:
            if unicodedata.is_normalized("NFC", str(data.data, "utf-8")):
                return data, offsets
        except UnicodeDecodeError:  # the per-document path names or keeps the bad bytes
            pass
    # Only documents holding non-ASCII bytes go through Python normalization.
    cum_high = np.concatenate(([0], np.cumsum(data >= 0x80, dtype=np.int64)))
    high = cum_high[offsets[1:]] - cum_high[offsets[:-1]]
    parts = []
    changed = False
    raw = data.tobytes()
    for d in np.flatnonzero(high):
        a, b = int(offsets[d]), int(offsets[d + 1])
        doc = raw[a:b]
        if is_text:
            try:
                norm = normalize_str(doc.decode("utf-8"), int(d) + first_index)
            except UnicodeDecodeError:
                norm = normalize_bytes(doc)
        else:
            norm = normalize_bytes(doc)
        if norm != doc:
            changed = True
        parts.append((int(d), norm))
    if not changed:
        return data, offsets
    lens = np.diff(offsets)
    pieces = []
    cursor = 0
    for d, norm in parts:
        pieces.append(raw[int(offsets[cursor]): int(offsets[d])])
        pieces.append(norm)
        lens[d] = len(norm)
        cursor = d + 1
    pieces.append(raw[int(offsets[cursor]):])
    new_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=new_offsets[1:])
    return np.frombuffer(b"".join(pieces), dtype=np.uint8), new_offsets


def _as_documents(texts, lazy=False):
    """A list, tuple or Arrow array as is; another iterable as a list (an iterator when ``lazy``)."""
    if isinstance(texts, (str, bytes, bytearray, memoryview)):
        return [texts]
    if _is_arrow(texts):
        return _arrow_array(texts)
    if isinstance(texts, (list, tuple)):
        return texts
    try:
        return iter(texts) if lazy else list(texts)
    except TypeError:
        raise TextError(
            f"expected str, bytes, a sequence of them or a pyarrow array, got {type(texts).__name__}"
        ) from None


def iter_packed(texts, batch_bytes: int, *, first_batch_bytes: int | None = None
                ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first_doc_index, data, offsets)`` batches of about ``batch_bytes``.

    A document is never split; one larger than ``batch_bytes`` is a batch alone.
    An iterable other than a list, tuple or Arrow array is read as the batches
    are asked for (a stream of any length packs in one batch's memory).
    ``first_batch_bytes`` (a ramp): the first batch is about that size and
    each next one twice the last, up to ``batch_bytes`` (threads waiting for
    their first batch start sooner).
    """
    target = min(first_batch_bytes or batch_bytes, batch_bytes)
    docs = _as_documents(texts, lazy=True)
    if _is_arrow(docs):
        n = len(docs)
        if docs.null_count:  # name the first null of the whole input, not of a batch
            _pack_arrow(docs)
        if n == 0:
            yield 0, np.zeros(0, np.uint8), np.zeros(1, np.int64)
            return
        import pyarrow.compute as pc

        sizes = np.asarray(pc.binary_length(docs).fill_null(0), dtype=np.int64)
        cum = np.cumsum(sizes)
        start = 0
        while start < n:
            base = cum[start - 1] if start else 0
            stop = int(np.searchsorted(cum, base + target, side="right"))
            stop = max(stop, start + 1)
            data, offsets = _pack_arrow(docs.slice(start, stop - start), start)
            yield start, data, offsets
            start = stop
            target = min(2 * target, batch_bytes)
        return
    # Documents are normalized in blocks (_normalize_many), each about the
    # number of documents the current batch still needs at the mean size so
    # far; a batch still ends after the first document that takes it to
    # ``target`` bytes, wherever that falls in a block. A stream's block also
    # stops once it fills the batch counted in characters (at most the
    # bytes), so a stream is read at most about one batch ahead.
    seq = isinstance(docs, (list, tuple))
    it = None if seq else iter(docs)
    parts: list = []
    size = 0
    first = 0
    i = 0  # index of the next document to read
    seen = 0  # bytes read so far
    while True:
        want = 1 if not i else max(1, min(_BLOCK_DOCS, (target - size) * i // max(seen, 1) + 1))
        if seq:
            block = docs[i:i + want]
        else:
            block, need = [], target - size
            for t in it:
                block.append(t)
                need -= len(t) if isinstance(t, (str, bytes)) else 0
                if need <= 0 or len(block) >= want:
                    break
        if not block:
            break
        enc = _normalize_many(block, i)
        ends = list(itertools.accumulate(map(len, enc)))  # bytes of the block through each document
        seen += ends[-1]
        if size + ends[-1] < target:  # the batch goes on
            parts.extend(enc)
            size += ends[-1]
            i += len(block)
            continue
        k = 0
        while k < len(enc):
            base = ends[k - 1] if k else 0
            j = bisect.bisect_left(ends, target - size + base, lo=k)  # the document that fills the batch
            if j == len(enc):
                parts.extend(enc[k:])
                size += ends[-1] - base
                break
            parts.extend(enc[k:j + 1])
            data, offsets = _join(parts)
            yield first, data, offsets
            first = i + j + 1
            parts, size = [], 0
            target = min(2 * target, batch_bytes)
            k = j + 1
        i += len(block)
    if parts or first == 0:
        data, offsets = _join(parts)
        yield first, data, offsets


def pack_texts(texts) -> tuple[np.ndarray, np.ndarray]:
    """Normalize and join texts: ``(data: uint8[:], offsets: int64[n + 1])``.

    ``texts`` is a ``str``/``bytes`` (one document), a sequence of them, or a
    pyarrow string/binary array.
    """
    docs = _as_documents(texts)
    if _is_arrow(docs):
        return _pack_arrow(docs)
    return _join(_normalize_many(docs, 0))
