"""Host steps around the lattice that every backend shares: segments in, layout out.

- ``segment_table``: cut a packed batch into segments and give each its
  sampling key and its position in its document;
- ``segment_layout``: where each segment's ids go in the flat result, and
  the document offsets, leaving room for ``<bos>`` / ``<eos>``;
- ``put_specials``: write ``<bos>`` (1) / ``<eos>`` (2) into that room;
- ``insert_specials``: the same for documents already encoded without them
  (the pipeline's pieces of documents split across batches);
- ``sampling_scores``: the scores a sampling lattice runs with (weights
  ``exp(alpha * score)``, or ``alpha * score`` clamped to finite values).

``<bos>`` and ``<eos>`` are a bool for every document or a boolean mask
per document. The device twins, for text already on the GPU, are in
``kernels.layout`` (side by side by name: ``segment_docs`` and
``document_keys`` for the table, ``document_tokens`` and ``segment_dest``
for the layout, ``put_specials`` for the specials).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# (the lattice's, the generator's and the Numba drivers' modules load when used: a
# short text served by ``gpu_bytepiece.aot`` imports no Numba)

__all__ = ["Segments", "segment_table", "segment_layout", "put_specials", "insert_specials",
           "sampling_scores"]

#: Ids of the special tokens.
BOS_ID = 1
EOS_ID = 2


class Segments(NamedTuple):
    """The segments of a packed batch, in text order (int64 arrays, ``key`` uint64)."""

    start: np.ndarray
    end: np.ndarray
    doc: np.ndarray
    key: np.ndarray  #: sampling key of the segment's document
    pos: np.ndarray  #: byte position of ``start`` in its document


def segment_table(data, doc_offsets, stream_key=None, first_doc=0, *, find=None) -> Segments:
    """Segments of documents ``data[doc_offsets[d]:doc_offsets[d + 1]]`` and their keys.

    Parameters
    ----------
    data : uint8 array
    doc_offsets : int64 array, ``n_docs + 1``
    stream_key : int, optional
        Sampling: document ``d`` gets key
        ``core.rng.document_keys(stream_key, first_doc + d)``. ``None`` (the
        best path): keys are 0, and unused.
    first_doc : int
        Index of the batch's first document in the call (or stream).
    find : callable, optional
        The segmentation, ``find(data, doc_offsets) -> (start, end, doc)``;
        default ``cpu_fallback.find_segments`` (``gpu_bytepiece.aot`` has
        its ahead-of-time twin).

    See Also
    --------
    gpu_bytepiece.cpu_fallback.find_segments : the segmentation.
    gpu_bytepiece.kernels.layout.segment_docs : the device twin (after the
        device segmentation, ``newline_ends`` ... ``segment_starts``).
    """
    if find is None:
        from ..cpu_fallback import find_segments as find
    start, end, doc = find(data, doc_offsets)
    if stream_key is None:
        key = np.zeros(len(start), dtype=np.uint64)
    else:
        from ..core.rng import document_keys

        n_docs = len(doc_offsets) - 1
        key = document_keys(stream_key, np.arange(first_doc, first_doc + n_docs, dtype=np.uint64))[doc]
    pos = start - doc_offsets[doc]
    return Segments(start, end, doc, key, pos)


def _per_doc(flag, n_docs):
    """``0`` / ``1`` for a bool; an int64 array of ``n_docs`` for a per-document mask."""
    if np.ndim(flag) == 0:
        return int(bool(flag))
    mask = np.asarray(flag, dtype=bool)
    if mask.shape != (n_docs,):
        raise ValueError(f"a per-document mask needs {n_docs} values, got shape {mask.shape}")
    return mask.astype(np.int64)


def segment_layout(seg_doc, counts, n_docs, bos=False, eos=False):
    """Where each segment's ids go, and the document offsets of the result.

    Parameters
    ----------
    seg_doc : int64 array
        Document of each segment (non-decreasing).
    counts : int64 array
        Ids of each segment.
    n_docs : int
    bos, eos : bool or boolean array of ``n_docs``
        Room for ``<bos>`` before / ``<eos>`` after every document, or the
        documents flagged.

    Returns
    -------
    dest : int64 array
        ``dest[k]``: position of segment ``k``'s first id.
    offsets : int64 array, ``n_docs + 1``

    See Also
    --------
    gpu_bytepiece.kernels.layout.document_tokens,
    gpu_bytepiece.kernels.layout.segment_dest : the device twins.
    """
    b = _per_doc(bos, n_docs)
    extra = b + _per_doc(eos, n_docs)
    per_doc = np.bincount(seg_doc, weights=counts, minlength=n_docs).astype(np.int64) + extra
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(per_doc, out=offsets[1:])
    # dest[k] = tokens before segment k + the bos/eos of the documents before it (+ its own bos)
    dest = np.zeros(len(counts), dtype=np.int64)
    if len(counts):
        np.cumsum(counts[:-1], out=dest[1:])
        if np.ndim(extra) == 0:
            dest += seg_doc * extra + b
        else:
            before = np.zeros(n_docs + 1, dtype=np.int64)
            np.cumsum(extra, out=before[1:])
            dest += (before[:-1] + b)[seg_doc]
    return dest, offsets


def put_specials(ids, offsets, bos=False, eos=False):
    """Write ``<bos>`` (1) at the start / ``<eos>`` (2) at the end of the documents flagged.

    ``ids`` has the room for them (``segment_layout``); ``bos`` and
    ``eos`` are a bool for every document or a boolean mask per document.

    See Also
    --------
    gpu_bytepiece.kernels.layout.put_specials : the device twin.
    """
    if np.ndim(bos):
        ids[offsets[:-1][np.asarray(bos, dtype=bool)]] = BOS_ID
    elif bos:
        ids[offsets[:-1]] = BOS_ID
    if np.ndim(eos):
        ids[offsets[1:][np.asarray(eos, dtype=bool)] - 1] = EOS_ID
    elif eos:
        ids[offsets[1:] - 1] = EOS_ID


def insert_specials(ids, offsets, bos=False, eos=False):
    """Ids and offsets of documents encoded without specials, with ``<bos>`` / ``<eos>`` added.

    ``bos`` and ``eos`` as in ``put_specials``. Each document is laid out
    as one segment (``segment_layout``), its ids copied in
    (``cpu_fallback.scatter_tokens``), the specials put around them.
    Returns new ``(ids, offsets)``.
    """
    from ..cpu_fallback import scatter_tokens

    offsets = np.asarray(offsets, dtype=np.int64)
    n_docs = len(offsets) - 1
    counts = np.diff(offsets)
    dest, new_off = segment_layout(np.arange(n_docs, dtype=np.int64), counts, n_docs, bos, eos)
    out = np.empty(int(new_off[-1]), dtype=np.uint32)
    scatter_tokens(np.ascontiguousarray(ids, dtype=np.uint32), offsets[:-1], counts, dest, out)
    put_specials(out, new_off, bos, eos)
    return out, new_off


#: The linear form of sampling takes weights ``exp(x)`` with ``x`` in ``[-LINEAR_RANGE, 0]``
#: (see ``core.lattice.rescale`` for why that range is safe).
LINEAR_RANGE = 200.0
#: Largest finite float64: a sampling score is clamped to ``-F64_MAX``.
F64_MAX = float(np.finfo(np.float64).max)


def sampling_scores(node_score, alpha):
    """The per-cell scores and ``alpha`` a lattice runs with, on every backend.

    For the best path (``alpha < 0``): ``node_score`` and ``alpha`` as they
    are. For sampling, computed here in numpy, once, so every device reads
    the same float64 numbers:

    - when every piece's ``alpha * score`` lies in ``[-200, 0]`` (any
      usual ``alpha``): the weights ``exp(alpha * score)``, ``0.0`` where
      no piece ends, and ``alpha = LINEAR``: the lattice's linear form,
      with no ``exp`` or ``log`` in its loop (``core.lattice``);
    - otherwise (a huge ``alpha``): ``alpha * node_score`` and ``alpha =
      1.0``, the log-sum-exp form. The lattice's ``bs + 1.0 * x`` is then
      exact on the CPU and under NVVM, which fuses ``a + b * c`` into one
      rounding even without fastmath, so CPU and GPU add the same float64
      numbers. A product that overflows (``alpha`` near ``1e308``) is
      clamped to ``-F64_MAX``, so a piece never looks like a cell without
      one (``-inf``): every position keeps at least its single byte (see
      ``core.lattice.sample_step``).

    Parameters
    ----------
    node_score : float64 array
        Per trie cell, ``-inf`` where no piece ends (``Trie.node_scores``).
    alpha : float

    Returns
    -------
    scores : float64 array
    alpha : numpy.float64
    """
    if alpha < 0:
        return node_score, np.float64(alpha)
    from ..core.lattice import LINEAR

    piece = node_score > -np.inf
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = np.float64(alpha) * node_score
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=F64_MAX, neginf=-F64_MAX)
    scaled[~piece] = -np.inf
    if piece.any() and scaled[piece].min() >= -LINEAR_RANGE and scaled[piece].max() <= 0.0:
        return np.where(piece, np.exp(np.where(piece, scaled, 0.0)), 0.0), np.float64(LINEAR)
    return scaled, np.float64(1.0)
