"""Device-side segmentation, prefix sums and output layout (device input and output).

For text that is already on the GPU (``CUDABackend.encode_device``) nothing
may go back to the host but a few scalars, so the host steps of
``CUDABackend.encode_packed`` have device twins here:

- segmentation, twin of ``cpu_fallback.find_segments``: ``newline_ends``
  and ``document_ends`` flag the last byte of every segment, a prefix sum
  over the flags numbers them and ``compact_tiles`` writes their ends in
  text order; ``segment_starts`` and ``segment_docs`` finish the segment
  table (start, document, key, position in the document);
- prefix sums: ``tile_sums`` (one block per tile), ``scan_in_place`` (one
  block over the tile sums) and ``scan_tiles`` / ``compact_tiles`` /
  ``partition_tiles`` (one block per tile again, adding the tile's offset;
  each thread takes ``ITEMS`` consecutive elements per block-scan step):
  a plain two-level block scan. Integer sums, so any order gives the same
  result;
- the output layout, twins of ``backend.segment_layout`` and
  ``backend.finish_specials``: ``document_tokens``, ``segment_dest`` and
  ``put_specials``; sampling keys, twin of ``lattice.document_keys``:
  ``document_keys``.

Every kernel loops grid-stride (over elements, or over tiles for the
block-per-tile kernels), so any launch size gives the same result; the
backend caps grids at ``config.CUDA_MAX_BLOCKS``. Kernels that scan with a
block use a static shared array of ``MAX_THREADS`` cells: launch them with
at most that many threads per block.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, int64

from gpu_bytepiece.core import lattice as _lat

__all__ = [
    "newline_ends", "document_ends", "tile_sums", "scan_in_place", "scan_tiles", "compact_tiles",
    "partition_tiles", "segment_starts", "segment_docs", "document_keys", "long_flags", "rebase",
    "chunk_cuts", "document_tokens", "segment_dest", "put_specials", "SIGNATURES", "MAX_THREADS",
]

#: Largest block the scanning kernels accept (their shared arrays' size).
MAX_THREADS = 1024
#: Consecutive elements one thread takes per block-scan step.
ITEMS = 8

_GOLDEN = _lat._GOLDEN
_MIX1 = _lat._MIX1
_MIX2 = _lat._MIX2
_S30 = _lat._S30
_S27 = _lat._S27
_S31 = _lat._S31


@cuda.jit(device=True)
def _block_scan(sh, tid, nthr, v):
    """Exclusive scan of ``v`` over the block (Hillis-Steele in ``sh``).

    Returns ``(exclusive, block total)``; every thread of the block must call.
    """
    sh[tid] = v
    cuda.syncthreads()
    d = 1
    while d < nthr:
        u = 0
        if tid >= d:
            u = sh[tid - d]
        cuda.syncthreads()
        sh[tid] += u
        cuda.syncthreads()
        d *= 2
    incl = sh[tid]
    total = sh[nthr - 1]
    cuda.syncthreads()
    return incl - v, total


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
def tile_sums(x, tile, sums):
    """``sums[t] = x[t * tile : (t + 1) * tile].sum()`` for every tile ``t``.

    One block per tile (grid-stride over tiles); thread ``j`` adds
    elements ``j, j + blockDim, ...`` of the tile, then a block scan adds
    the threads' sums. ``sums`` has at least ``ceil(len(x) / tile)`` cells.

    See Also
    --------
    numpy.add.reduceat : what it computes, on the host.
    """
    sh = cuda.shared.array(MAX_THREADS, dtype=int64)
    tid = cuda.threadIdx.x
    nthr = cuda.blockDim.x
    n = x.shape[0]
    n_tiles = (n + tile - 1) // tile
    t = cuda.blockIdx.x
    while t < n_tiles:
        lo = t * tile
        hi = lo + tile
        if hi > n:
            hi = n
        acc = 0
        j = lo + tid
        while j < hi:
            acc += x[j]
            j += nthr
        _, total = _block_scan(sh, tid, nthr, acc)
        if tid == 0:
            sums[t] = total
        t += cuda.gridDim.x


@cuda.jit
def scan_in_place(sums, n):
    """Exclusive prefix sum of ``sums[:n]`` in place, and ``sums[n]`` = the total.

    One block (launch ``[1, threads]``): chunks of ``blockDim`` cells, each
    scanned by the block, with a running carry.

    See Also
    --------
    numpy.cumsum : what it computes (shifted by one), on the host.
    """
    sh = cuda.shared.array(MAX_THREADS, dtype=int64)
    tid = cuda.threadIdx.x
    nthr = cuda.blockDim.x
    if cuda.blockIdx.x != 0:
        return
    carry = 0
    j0 = 0
    while j0 < n:
        j = j0 + tid
        v = 0
        if j < n:
            v = sums[j]
        excl, total = _block_scan(sh, tid, nthr, v)
        if j < n:
            sums[j] = carry + excl
        carry += total
        j0 += nthr
    if tid == 0:
        sums[n] = carry


@cuda.jit
def scan_tiles(x, tile, tile_off, out):
    """``out[i] = x[:i].sum()`` for ``i <= len(x)`` (exclusive scan plus the total).

    One block per tile (grid-stride over tiles); the tile's offset comes
    from ``tile_off`` (``tile_sums`` then ``scan_in_place``), then chunks
    of ``blockDim * ITEMS`` elements are scanned with a running carry:
    thread ``j`` adds ``ITEMS`` consecutive elements, a block scan of those
    sums gives each thread its start, and it writes its elements' prefixes.

    See Also
    --------
    numpy.cumsum : what it computes (with a leading 0), on the host;
        ``backend.segment_layout`` uses it for the same offsets.
    """
    sh = cuda.shared.array(MAX_THREADS, dtype=int64)
    tid = cuda.threadIdx.x
    nthr = cuda.blockDim.x
    n = x.shape[0]
    n_tiles = (n + tile - 1) // tile
    if cuda.blockIdx.x == 0 and tid == 0:
        out[n] = tile_off[n_tiles]
    t = cuda.blockIdx.x
    while t < n_tiles:
        lo = t * tile
        hi = lo + tile
        if hi > n:
            hi = n
        carry = tile_off[t]
        j0 = lo
        while j0 < hi:
            # thread tid takes ITEMS consecutive elements of the chunk
            j = j0 + tid * ITEMS
            v = 0
            for q in range(ITEMS):
                if j + q < hi:
                    v += x[j + q]
            excl, total = _block_scan(sh, tid, nthr, v)
            acc = carry + excl
            for q in range(ITEMS):
                if j + q < hi:
                    out[j + q] = acc
                    acc += x[j + q]
            carry += total
            j0 += nthr * ITEMS
        t += cuda.gridDim.x


@cuda.jit
def compact_tiles(flags, tile, tile_off, base, out):
    """``out[r] = i + base`` for the ``r``-th ``i`` (in order) with ``flags[i] != 0``.

    Stream compaction: one block per tile as ``scan_tiles``, the scan of
    the flags giving each set flag its place. With ``flags`` from
    ``newline_ends`` + ``document_ends`` and ``base = 1`` it writes the
    segment ends.

    See Also
    --------
    gpu_bytepiece.cpu_fallback.find_segments : the CPU twin for segments
        (``numpy.flatnonzero(flags) + base`` in general).
    """
    sh = cuda.shared.array(MAX_THREADS, dtype=int64)
    tid = cuda.threadIdx.x
    nthr = cuda.blockDim.x
    n = flags.shape[0]
    n_tiles = (n + tile - 1) // tile
    t = cuda.blockIdx.x
    while t < n_tiles:
        lo = t * tile
        hi = lo + tile
        if hi > n:
            hi = n
        carry = tile_off[t]
        j0 = lo
        while j0 < hi:
            j = j0 + tid * ITEMS
            v = 0
            for q in range(ITEMS):
                if j + q < hi and flags[j + q] != 0:
                    v += 1
            excl, total = _block_scan(sh, tid, nthr, v)
            r = carry + excl
            for q in range(ITEMS):
                if j + q < hi and flags[j + q] != 0:
                    out[r] = j + q + base
                    r += 1
            carry += total
            j0 += nthr * ITEMS
        t += cuda.gridDim.x


@cuda.jit
def partition_tiles(flags, tile, tile_off, out):
    """Stable partition of ``0 .. len(flags) - 1``: flagged indices first.

    ``out[:n_set]`` are the ``i`` with ``flags[i] != 0`` in order,
    ``out[n_set:]`` the others in order (``n_set = tile_off[n_tiles]``).
    One block per tile, as ``compact_tiles``. The backend uses it to hand
    long segments to ``encode_long_segments`` and the rest to
    ``encode_segments``.

    See Also
    --------
    numpy.argsort : ``argsort(flags == 0, kind="stable")`` on the host.
    """
    sh = cuda.shared.array(MAX_THREADS, dtype=int64)
    tid = cuda.threadIdx.x
    nthr = cuda.blockDim.x
    n = flags.shape[0]
    n_tiles = (n + tile - 1) // tile
    n_set = tile_off[n_tiles]
    t = cuda.blockIdx.x
    while t < n_tiles:
        lo = t * tile
        hi = lo + tile
        if hi > n:
            hi = n
        carry = tile_off[t]
        j0 = lo
        while j0 < hi:
            j = j0 + tid * ITEMS
            v = 0
            for q in range(ITEMS):
                if j + q < hi and flags[j + q] != 0:
                    v += 1
            excl, total = _block_scan(sh, tid, nthr, v)
            r = carry + excl  # flagged before element j + q
            for q in range(ITEMS):
                if j + q < hi:
                    if flags[j + q] != 0:
                        out[r] = j + q
                        r += 1
                    else:
                        out[n_set + j + q - r] = j + q
            carry += total
            j0 += nthr * ITEMS
        t += cuda.gridDim.x


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
    """``keys[d] = mix64(k0 ^ (first + d))`` with ``k0 = mix64(stream key)``.

    One thread per document, grid-stride.

    See Also
    --------
    gpu_bytepiece.core.lattice.document_keys : the host twin (numpy).
    """
    d = cuda.grid(1)
    stride = cuda.gridsize(1)
    while d < keys.shape[0]:
        z = k0 ^ np.uint64(first + d)
        z = z + _GOLDEN
        z = (z ^ (z >> _S30)) * _MIX1
        z = (z ^ (z >> _S27)) * _MIX2
        keys[d] = z ^ (z >> _S31)
        d += stride


@cuda.jit
def long_flags(seg_start, seg_end, threshold, flags):
    """``flags[k] = 1`` for segments longer than ``threshold`` bytes, else 0.

    One thread per segment, grid-stride.

    See Also
    --------
    gpu_bytepiece.cuda_backend.CUDABackend : the host path's
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
    gpu_bytepiece.cuda_backend.CUDABackend : ``seg_start[k0:k1] - a0`` on
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
    gpu_bytepiece.cuda_backend.plan_chunks : the host path's planner.
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
    gpu_bytepiece.backend.segment_layout : the host twin (``bincount`` of
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
    gpu_bytepiece.backend.segment_layout : the host twin.
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
    gpu_bytepiece.backend.finish_specials : the host twin.
    """
    d = cuda.grid(1)
    stride = cuda.gridsize(1)
    while d < offsets.shape[0] - 1:
        if bos:
            ids[offsets[d]] = 1
        if eos:
            ids[offsets[d + 1] - 1] = 2
        d += stride


_I64 = "int64[::1]"
SIGNATURES = {
    "newline_ends": "void(uint8[::1], uint8[::1])",
    "document_ends": "void(int64[::1], uint8[::1])",
    "tile_sums": ("void(uint8[::1], int64, int64[::1])", "void(int64[::1], int64, int64[::1])"),
    "scan_in_place": "void(int64[::1], int64)",
    "scan_tiles": "void(int64[::1], int64, int64[::1], int64[::1])",
    "compact_tiles": "void(uint8[::1], int64, int64[::1], int64, int64[::1])",
    "partition_tiles": "void(uint8[::1], int64, int64[::1], int64[::1])",
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
