"""Device-side segmentation and output layout (device input and output).

For text that is already on the GPU (``backends.cuda_device``) nothing may
go back to the host but a few scalars, so the host steps of the host-input
path have device twins here:

- segmentation, twin of ``cpu_fallback.find_segments``: ``newline_ends``
  and ``document_ends`` flag the last byte of every segment, a prefix sum
  over the flags numbers them and ``scan.compact_tiles`` writes their ends
  in text order; ``segment_starts`` and ``segment_docs`` finish the segment
  table (start, document, key, position in the document);
- sampling keys, twin of ``core.rng.document_keys``: ``document_keys``;
- chunks and long segments: ``chunk_cuts``, ``rebase``, ``long_flags``;
- the output layout, twins of ``backends.layout.segment_layout`` and
  ``backends.layout.put_specials``: ``document_tokens``, ``segment_dest``
  and ``put_specials``.

The prefix sums these steps need are in ``kernels.scan``. Every kernel
loops grid-stride, so any launch size gives the same result; the backend
caps grids at ``config.CUDA_MAX_BLOCKS``.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from gpu_bytepiece.core.rng import splitmix

__all__ = [
    "newline_ends", "document_ends", "segment_starts", "segment_docs", "document_keys", "long_flags", "rebase",
    "chunk_cuts", "document_tokens", "segment_dest", "put_specials", "SIGNATURES",
]


@cuda.jit
def newline_ends(data, flags):
    """``flags[i] = 1`` where byte ``i`` ends a segment by the newline rule.

    The rule of ``.*\\n+|.+``: a ``\\n`` not followed by another ``\\n``
    (``i + 1 < len(data)``). Document ends are flagged afterwards by
    ``document_ends``. One thread per byte, grid-stride.

    See Also
    --------
    gpu_bytepiece.cpu_fallback.find_segments : the CPU twin (all of the
        segmentation in one sequential pass).
    """
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = data.shape[0]
    while i < n:
        f = 0
        if data[i] == 10 and i + 1 < n:
            if data[i + 1] != 10:
                f = 1
        flags[i] = f
        i += stride


@cuda.jit
def document_ends(doc_off, flags):
    """``flags[doc_off[d + 1] - 1 - doc_off[0]] = 1`` for every non-empty document ``d``.

    Run after ``newline_ends`` (which writes every flag). One thread per
    document, grid-stride.

    See Also
    --------
    gpu_bytepiece.cpu_fallback.find_segments : the CPU twin.
    """
    d = cuda.grid(1)
    stride = cuda.gridsize(1)
    n_docs = doc_off.shape[0] - 1
    a0 = doc_off[0]
    while d < n_docs:
        b = doc_off[d + 1]
        if b > doc_off[d]:
            flags[b - 1 - a0] = 1
        d += stride


@cuda.jit
def segment_starts(seg_end, first, seg_start):
    """``seg_start[k] = seg_end[k - 1]`` (``first`` for ``k = 0``): segments tile the text.

    One thread per segment, grid-stride.

    See Also
    --------
    gpu_bytepiece.cpu_fallback.find_segments : the CPU twin.
    """
    k = cuda.grid(1)
    stride = cuda.gridsize(1)
    while k < seg_end.shape[0]:
        if k == 0:
            seg_start[k] = first
        else:
            seg_start[k] = seg_end[k - 1]
        k += stride


@cuda.jit
def segment_docs(seg_start, doc_off, doc_keys, use_keys, seg_doc, seg_key, seg_pos):
    """Document, sampling key and position in the document of every segment.

    ``seg_start`` counts from ``doc_off[0]``; the document of a segment is
    the last ``d`` with ``doc_off[d] <= start`` (a binary search: empty
    documents share their offset with the next one and hold no segment).
    ``seg_key[k] = doc_keys[d]`` when ``use_keys``, else 0. One thread per
    segment, grid-stride.

    See Also
    --------
    gpu_bytepiece.cpu_fallback.find_segments : the CPU twin of ``seg_doc``
        (``CUDABackend.encode_packed`` derives the key and position on the
        host from it).
    """
    k = cuda.grid(1)
    stride = cuda.gridsize(1)
    n_docs = doc_off.shape[0] - 1
    a0 = doc_off[0]
    while k < seg_start.shape[0]:
        p = seg_start[k] + a0
        lo = 0
        hi = n_docs  # invariant: doc_off[lo] <= p < doc_off[hi]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if doc_off[mid] <= p:
                lo = mid
            else:
                hi = mid
        seg_doc[k] = lo
        seg_pos[k] = p - doc_off[lo]
        if use_keys:
            seg_key[k] = doc_keys[lo]
        else:
            seg_key[k] = 0
        k += stride


@cuda.jit
def document_keys(k0, first, keys):
    """``keys[d] = splitmix(k0 ^ (first + d))`` with ``k0 = rng.stream_root(stream key)``.

    One thread per document, grid-stride.

    See Also
    --------
    gpu_bytepiece.core.rng.document_keys : the host twin (numpy).
    """
    d = cuda.grid(1)
    stride = cuda.gridsize(1)
    while d < keys.shape[0]:
        keys[d] = splitmix(k0 ^ np.uint64(first + d))
        d += stride


@cuda.jit
def long_flags(seg_start, seg_end, threshold, flags):
    """``flags[k] = 1`` for segments longer than ``threshold`` bytes, else 0.

    One thread per segment, grid-stride.

    See Also
    --------
    gpu_bytepiece.backends.cuda.CUDABackend : the host path's
        ``seg_len > threshold`` in numpy.
    """
    k = cuda.grid(1)
    stride = cuda.gridsize(1)
    while k < flags.shape[0]:
        f = 0
        if seg_end[k] - seg_start[k] > threshold:
            f = 1
        flags[k] = f
        k += stride


@cuda.jit
def rebase(src, k0, shift, dst):
    """``dst[j] = src[k0 + j] - shift``: a chunk's segment bounds, counted from its first byte.

    One thread per element, grid-stride.

    See Also
    --------
    gpu_bytepiece.backends.cuda.CUDABackend : ``seg_start[k0:k1] - a0`` on
        the host path.
    """
    j = cuda.grid(1)
    stride = cuda.gridsize(1)
    while j < dst.shape[0]:
        dst[j] = src[k0 + j] - shift
        j += stride


@cuda.jit
def chunk_cuts(seg_end, step, cuts, byte_cuts):
    """Cut segments into chunks of about ``step`` bytes, whole segments each.

    ``cuts[j]`` = the number of segments ending at or before
    ``(j + 1) * step`` (the last cut: all of them), ``byte_cuts[j]`` = the
    end of the last of those (0 if none). Chunk ``j`` is segments
    ``cuts[j - 1]:cuts[j]``, bytes ``byte_cuts[j - 1]:byte_cuts[j]``
    (``cuts[-1] = byte_cuts[-1] = 0``); it may be empty, and a segment
    longer than ``step`` shares its chunk only with segments ending in the
    same step. One thread per cut (binary search), grid-stride.

    See Also
    --------
    gpu_bytepiece.backends.cuda.plan_chunks : the host path's planner.
    """
    j = cuda.grid(1)
    stride = cuda.gridsize(1)
    n_cuts = cuts.shape[0]
    n_seg = seg_end.shape[0]
    while j < n_cuts:
        if j == n_cuts - 1:
            c = n_seg
        else:
            x = (j + 1) * step
            lo = 0
            hi = n_seg  # first k with seg_end[k] > x lies in [lo, hi]
            while lo < hi:
                mid = (lo + hi) // 2
                if seg_end[mid] <= x:
                    lo = mid + 1
                else:
                    hi = mid
            c = lo
        cuts[j] = c
        if c > 0:
            byte_cuts[j] = seg_end[c - 1]
        else:
            byte_cuts[j] = 0
        j += stride


@cuda.jit
def document_tokens(doc_off, seg_end, cum, extra, tokens):
    """Ids per document: its segments' ids (from ``cum``, the scanned counts) + ``extra``.

    The segments of document ``d`` are those ending in
    ``(doc_off[d], doc_off[d + 1]]`` (positions counted from
    ``doc_off[0]``), found by binary search in ``seg_end``. One thread per
    document, grid-stride.

    See Also
    --------
    gpu_bytepiece.backends.layout.segment_layout : the host twin (``bincount`` of
        the counts by document).
    """
    d = cuda.grid(1)
    stride = cuda.gridsize(1)
    n_docs = doc_off.shape[0] - 1
    n_seg = seg_end.shape[0]
    a0 = doc_off[0]
    while d < n_docs:
        first = 0
        last = 0
        for side in range(2):
            x = doc_off[d + side] - a0
            lo = 0
            hi = n_seg
            while lo < hi:
                mid = (lo + hi) // 2
                if seg_end[mid] <= x:
                    lo = mid + 1
                else:
                    hi = mid
            if side == 0:
                first = lo
            else:
                last = lo
        tokens[d] = cum[last] - cum[first] + extra
        d += stride


@cuda.jit
def segment_dest(cum, seg_doc, extra, bos, dest):
    """``dest[k] = cum[k] + seg_doc[k] * extra + bos``: where segment ``k``'s ids go.

    One thread per segment, grid-stride.

    See Also
    --------
    gpu_bytepiece.backends.layout.segment_layout : the host twin.
    """
    k = cuda.grid(1)
    stride = cuda.gridsize(1)
    while k < dest.shape[0]:
        dest[k] = cum[k] + seg_doc[k] * extra + bos
        k += stride


@cuda.jit
def put_specials(offsets, bos, eos, ids):
    """Id 1 at the start / 2 at the end of every document (``bos`` / ``eos`` nonzero).

    One thread per document, grid-stride.

    See Also
    --------
    gpu_bytepiece.backends.layout.put_specials : the host twin.
    """
    d = cuda.grid(1)
    stride = cuda.gridsize(1)
    while d < offsets.shape[0] - 1:
        if bos:
            ids[offsets[d]] = 1
        if eos:
            ids[offsets[d + 1] - 1] = 2
        d += stride


SIGNATURES = {
    "newline_ends": "void(uint8[::1], uint8[::1])",
    "document_ends": "void(int64[::1], uint8[::1])",
    "segment_starts": "void(int64[::1], int64, int64[::1])",
    "segment_docs": "void(int64[::1], int64[::1], uint64[::1], int64, int64[::1], uint64[::1], int64[::1])",
    "document_keys": "void(uint64, int64, uint64[::1])",
    "long_flags": "void(int64[::1], int64[::1], int64, uint8[::1])",
    "rebase": "void(int64[::1], int64, int64, int64[::1])",
    "chunk_cuts": "void(int64[::1], int64, int64[::1], int64[::1])",
    "document_tokens": "void(int64[::1], int64[::1], int64[::1], int64, int64[::1])",
    "segment_dest": "void(int64[::1], int64[::1], int64, int64, int64[::1])",
    "put_specials": "void(int64[::1], int64, int64, uint32[::1])",
}
