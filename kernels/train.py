"""Numba CUDA kernels of the trainer: n-gram counting, the n-gram Viterbi, counting and splitting pieces.

The per-position key and the per-segment Viterbi are the plain functions of
:mod:`gpu_bytepiece.core.ngram` compiled with ``numba.cuda.jit(device=True)``
(float64 additions only, no fastmath; no multiply to contract into an FMA),
exactly as ``cpu_fallback.train`` compiles them with ``numba.njit``. The
kernels differ from their CPU twins only in how they loop and in how equal
keys meet (a hash table with atomics here, a sort there): both give the same
sorted ``(key, count)`` runs and the same segmentations.

Counting pieces (the second pass) packs each piece of up to 7 bytes into its
key as the CPU does and counts the keys in the same kind of hash table; the
starts of longer pieces are flagged, listed in text order by
``kernels.scan``'s compaction and measured, for the host's table of long
pieces.

Splitting pieces (the pruning's re-tokenization) runs the Unigram lattice
of :mod:`gpu_bytepiece.core.lattice`, compiled as ``kernels.tokenize``
compiles it, on each piece and adds the piece's weight to its tokens' counts
with integer atomics (exact in any order).

The host side that launches them is ``gpu_bytepiece.train.cuda_engine``.
Importing this module needs numba-cuda but no GPU; kernels compile on first
launch.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from gpu_bytepiece.core import ngram as _ng
from gpu_bytepiece.core.ngram import HASH_MUL as _HASH_MUL

from .tokenize import backtrack, lattice

__all__ = ["count_position_keys", "count_piece_keys", "long_piece_lengths", "compact_counts",
           "ngram_viterbi_segments", "fill_u64", "split_pieces", "SIGNATURES"]

# The shared bodies, compiled for the GPU.
position_key = cuda.jit(device=True)(_ng.position_key)
ngram_viterbi = cuda.jit(device=True)(_ng.ngram_viterbi)

#: Local scratch per thread: one float64 per tag (``order <= MAX_ORDER``).
_LOCAL = _ng.MAX_ORDER + 1


@cuda.jit
def fill_u64(a, value):
    """``a[:] = value`` (grid-stride)."""
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < a.shape[0]:
        a[t] = value
        t += stride


@cuda.jit(device=True)
def _segment_of(seg_end, p):
    """The first segment ``k`` with ``seg_end[k] > p`` (binary search; ``len(seg_end)`` if none)."""
    lo = 0
    hi = seg_end.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if seg_end[mid] > p:
            hi = mid
        else:
            lo = mid + 1
    return lo


@cuda.jit(device=True)
def _count_key(table, counts, key, shift, mask):
    """``counts[slot of key] += 1`` in an open-addressing table (``atomic.cas`` on the key, linear probing)."""
    h = (key * _HASH_MUL) >> shift
    while True:
        old = cuda.atomic.cas(table, np.int64(h), np.uint64(0), key)
        if old == 0 or old == key:
            cuda.atomic.add(counts, np.int64(h), 1)
            return
        h = (h + np.uint64(1)) & mask


@cuda.jit
def count_position_keys(data, seg_start, seg_end, pos0, n_pos, order, table, counts, shift, mask):
    """Hash-count the position keys of positions ``pos0 .. pos0 + n_pos``.

    Grid-stride over positions, one per thread: the thread finds its segment
    (binary search in ``seg_end``; segments tile the positions), computes
    :func:`gpu_bytepiece.core.ngram.position_key` and inserts it in an
    open-addressing table (``atomic.cas`` on the key, linear probing) whose
    slot count it bumps with ``atomic.add``. ``table`` starts all 0 (no key is
    0) and holds at least ``2 * n_pos`` slots.

    See Also
    --------
    gpu_bytepiece.cpu_fallback.train.position_keys : the CPU twin (keys into
        an array, then numpy's sort and ``run_lengths``).
    """
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < n_pos:
        p = pos0 + t
        key = position_key(data, p, seg_end[_segment_of(seg_end, p)], order)
        _count_key(table, counts, key, shift, mask)
        t += stride


@cuda.jit
def count_piece_keys(data, flags, seg_start, seg_end, pos0, n_pos, table, counts, shift, mask, long_flags):
    """Hash-count the short pieces starting at positions ``pos0 .. pos0 + n_pos``; flag the long ones.

    A piece starts at a flagged byte (``flags[p] != 0``) of a segment and
    runs to the next flagged byte or the segment's end. Grid-stride over
    positions, one per thread: a thread whose byte starts a piece of at most
    7 bytes adds the piece's key (:func:`gpu_bytepiece.core.ngram.position_key`
    of its bytes) to the table as ``count_position_keys`` does (``table`` all
    0 to start, at least ``2 * n_pos`` slots); ``long_flags[p - pos0]`` is 1
    where a longer piece starts, 0 elsewhere (``kernels.scan.compact_tiles``
    then lists them in text order). Bytes outside the segments are ignored.

    See Also
    --------
    gpu_bytepiece.cpu_fallback.train_pieces.extract_pieces : the CPU twin
        (short keys into an array, then numpy's sort and ``run_lengths``;
        long pieces as spans in text order).
    """
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    n_seg = seg_end.shape[0]
    while t < n_pos:
        p = pos0 + t
        lf = 0
        if flags[p] != 0:
            k = _segment_of(seg_end, p)
            if k < n_seg and seg_start[k] <= p:
                b = seg_end[k]
                lim = p + 8
                if lim > b:
                    lim = b
                j = p + 1
                while j < lim and flags[j] == 0:
                    j += 1
                if j - p <= 7:
                    _count_key(table, counts, position_key(data, p, j, 7), shift, mask)
                else:
                    lf = 1
        long_flags[t] = lf
        t += stride


@cuda.jit
def long_piece_lengths(flags, seg_end, long_start, long_len):
    """``long_len[q]``: bytes from ``long_start[q]`` to the next flagged byte or its segment's end.

    One thread per piece, grid-stride; the starts come from
    ``count_piece_keys``' long flags.

    See Also
    --------
    gpu_bytepiece.cpu_fallback.train_pieces.extract_pieces : the CPU twin.
    """
    q = cuda.grid(1)
    stride = cuda.gridsize(1)
    while q < long_start.shape[0]:
        p = long_start[q]
        b = seg_end[_segment_of(seg_end, p)]
        j = p + 1
        while j < b and flags[j] == 0:
            j += 1
        long_len[q] = j - p
        q += stride


@cuda.jit
def compact_counts(table, counts, out_keys, out_counts, n_out):
    """Copy the used slots of a count table to ``out_*`` (order unspecified).

    Grid-stride over slots; ``n_out[0]`` (starting at 0) hands out places
    with ``atomic.add``. The host sorts the result by key.

    See Also
    --------
    gpu_bytepiece.cpu_fallback.train.run_lengths : the CPU twin.
    """
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < table.shape[0]:
        k = table[t]
        if k != 0:
            i = cuda.atomic.add(n_out, 0, 1)
            out_keys[i] = k
            out_counts[i] = counts[t]
        t += stride


@cuda.jit
def ngram_viterbi_segments(data, seg_start, seg_end, seg_order, order, ensure_unicode,
                           lp1, lp2, ht, htf, ht_shift, ht_mask, routes, flags):
    """Run :func:`gpu_bytepiece.core.ngram.ngram_viterbi` over every segment.

    One thread per segment, grid-stride over ``seg_order`` (a permutation of
    the segments, longest first so that a warp's threads get segments of about
    equal length; any permutation gives the same flags). Segment ``k`` keeps
    its routes in ``routes[seg_start[k] * order:]`` (``len(data) * order``
    cells in all) and its tag and score rows in thread-local arrays.

    See Also
    --------
    gpu_bytepiece.cpu_fallback.train.ngram_viterbi_segments : the CPU twin
        (``prange`` over chunks of segments; ``chunk_bounds`` instead of
        ``seg_order``, routes allocated per chunk instead of passed in).
    """
    node = cuda.local.array(_LOCAL, np.float64)
    prev = cuda.local.array(_LOCAL, np.float64)
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < seg_order.shape[0]:
        k = seg_order[t]
        a = seg_start[k]
        ngram_viterbi(data, a, seg_end[k], order, ensure_unicode, lp1, lp2, ht, htf, ht_shift, ht_mask,
                      node, prev, routes, a * order, flags)
        t += stride


@cuda.jit
def split_pieces(pool, off, ln, out_start, order, cells, node_id, node_score, max_len, weights,
                 best, back, out, result):
    """Unigram-tokenize each piece ``pool[off[k]:off[k] + ln[k]]`` as one segment; count its tokens.

    One thread per piece, grid-stride over ``order`` (a permutation of the
    pieces, longest first). Piece ``k`` uses scratch ``best`` / ``back`` at
    ``out_start[k] + k ..`` (``sum(ln) + len(ln)`` cells) and writes its ids
    to ``out[out_start[k]:]`` (``sum(ln)`` cells, ``out_start`` the cumulative
    lengths); then ``result[id] += weights[k]`` for each of its ids
    (``cuda.atomic.add`` on int64: the same sums as the CPU in any order).

    See Also
    --------
    gpu_bytepiece.cpu_fallback.train_pieces.tokenize_pieces,
    gpu_bytepiece.cpu_fallback.train_pieces.add_split_counts : the CPU twins.
    """
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    key = np.uint64(0)
    while t < order.shape[0]:
        k = order[t]
        a = off[k]
        o = out_start[k]
        lattice(pool, a, a + ln[k], cells, node_score, max_len, -1.0, key, 0, best, back, o + k)
        m = backtrack(ln[k], back, node_id, o + k, out, o)
        w = weights[k]
        for j in range(m):
            cuda.atomic.add(result, out[o + j], w)
        t += stride


#: Argument types each kernel is launched with (C-contiguous 1-d arrays).
SIGNATURES = {
    "fill_u64": "void(uint64[::1], uint64)",
    "count_position_keys": "void(uint8[::1], int64[::1], int64[::1], int64, int64, int64, "
                           "uint64[::1], int64[::1], uint64, uint64)",
    "count_piece_keys": "void(uint8[::1], uint8[::1], int64[::1], int64[::1], int64, int64, uint64[::1], int64[::1], "
                        "uint64, uint64, uint8[::1])",
    "long_piece_lengths": "void(uint8[::1], int64[::1], int64[::1], int64[::1])",
    "compact_counts": "void(uint64[::1], int64[::1], uint64[::1], int64[::1], int64[::1])",
    "ngram_viterbi_segments": "void(uint8[::1], int64[::1], int64[::1], int64[::1], int64, boolean, "
                              "float64[::1], float64[::1], uint64[::1], float64[::1], uint64, uint64, "
                              "uint8[::1], uint8[::1])",
    "split_pieces": "void(uint8[::1], int64[::1], int64[::1], int64[::1], int64[::1], int64[::1], int32[::1], "
                    "float64[::1], int64, int64[::1], float64[::1], int64[::1], int32[::1], "
                    "int64[::1])",
}
