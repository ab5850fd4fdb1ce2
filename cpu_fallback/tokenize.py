"""Numba CPU drivers around the shared lattice (``gpu_bytepiece.core.lattice``)."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from gpu_bytepiece import jit_cache
from gpu_bytepiece.core import lattice as _lat
jit_cache.install()  # the package's cache locator, before the cache=True functions below

# The one lattice body, compiled for the CPU (no fastmath: ids depend on it).
lattice = numba.njit(cache=True, nogil=True)(_lat.lattice)
backtrack = numba.njit(cache=True, nogil=True)(_lat.backtrack)


_NL8 = np.uint64(0x0A0A0A0A0A0A0A0A)
_ONES8 = np.uint64(0x0101010101010101)
_HIGH8 = np.uint64(0x8080808080808080)


@numba.njit(cache=True, nogil=True)
def _segments(data, doc_offsets, cap):
    seg_start = np.empty(cap, dtype=np.int64)
    seg_end = np.empty(cap, dtype=np.int64)
    seg_doc = np.empty(cap, dtype=np.int64)
    # the newlines' positions, eight bytes at a time: a word with no byte 10
    # (no zero byte once xor-ed with 0x0A..: ``(x - 0x01..) & ~x & 0x80..``
    # is 0 exactly then) is skipped whole
    n = data.shape[0]
    n8 = n - n % 8
    words = data[:n8].view(np.uint64)
    nl = np.empty(cap, dtype=np.int64)
    m = 0
    for j in range(n8 // 8):
        x = words[j] ^ _NL8
        if (x - _ONES8) & ~x & _HIGH8:
            for q in range(8 * j, 8 * j + 8):
                if data[q] == 10:
                    nl[m] = q
                    m += 1
    for q in range(n8, n):
        if data[q] == 10:
            nl[m] = q
            m += 1
    k = 0
    j = 0
    for d in range(doc_offsets.shape[0] - 1):
        a = doc_offsets[d]
        b = doc_offsets[d + 1]
        while j < m and nl[j] < a:
            j += 1
        s = a
        # a segment ends after a newline that the next byte of the document does not continue
        while j < m and nl[j] < b - 1:
            i = nl[j]
            if data[i + 1] != 10:
                seg_start[k] = s
                seg_end[k] = i + 1
                seg_doc[k] = d
                k += 1
                s = i + 1
            j += 1
        if b > a:
            seg_start[k] = s
            seg_end[k] = b
            seg_doc[k] = d
            k += 1
    return seg_start[:k], seg_end[:k], seg_doc[:k]


def find_segments(data, doc_offsets):
    """Cut documents into BytePiece segments (regex ``.*\\n+|.+`` on bytes).

    A segment is a maximal run of non-newline bytes followed by its whole run
    of ``\\n`` bytes; an empty document has no segment. Returns
    ``(seg_start, seg_end, seg_doc)``, int64 arrays in text order. One pass
    (Numba, GIL released) into arrays sized by the number of ``\\n`` bytes
    plus documents, which bounds the number of segments.
    """
    cap = int(np.count_nonzero(data == 10)) + len(doc_offsets) - 1
    return _segments(data, doc_offsets, cap)


@numba.njit(cache=True, nogil=True)
def encode_chunk(data, seg_start, seg_end, seg_key, seg_pos, k0, k1,
                 cells, node_id, node_score, max_len, alpha, out, counts):
    """Segments ``k0 .. k1 - 1`` with one scratch sized to the longest.

    Their ids are written back to back from ``out[seg_start[k0]]`` (a segment
    never has more ids than bytes, so this stays inside the chunk's bytes).
    A separate function from the ``prange`` loop: Numba's parfor lowering
    optimizes an inlined body worse (measured ~12% slower).
    """
    m = 0
    for k in range(k0, k1):
        if seg_end[k] - seg_start[k] > m:
            m = seg_end[k] - seg_start[k]
    best = np.empty(m + 1, dtype=np.float64)
    back = np.empty(m + 1, dtype=np.int64)
    w = seg_start[k0]
    for k in range(k0, k1):
        a = seg_start[k]
        b = seg_end[k]
        lattice(data, a, b, cells, node_score, max_len,
                alpha, seg_key[k], seg_pos[k], best, back, 0)
        counts[k] = backtrack(b - a, back, node_id, 0, out, w)
        w += counts[k]


@numba.njit(cache=True, nogil=True, parallel=True)
def encode_segments(data, seg_start, seg_end, seg_key, seg_pos, chunk_bounds,
                    cells, node_id, node_score, max_len, alpha, out, counts):
    """Run the lattice over every segment; CPU twin of ``kernels.encode_segments``.

    Chunks of consecutive segments (``chunk_bounds``) are spread over threads
    with ``prange``; each chunk reuses one scratch sized to its longest
    segment. Chunk ``c``'s ids are written back to back from
    ``out[seg_start[chunk_bounds[c]]]`` (a segment never has more ids than
    bytes, so chunks cannot overlap); segment ``k``'s count goes to
    ``counts[k]``.
    """
    for c in prange(chunk_bounds.shape[0] - 1):
        encode_chunk(data, seg_start, seg_end, seg_key, seg_pos, chunk_bounds[c], chunk_bounds[c + 1],
                     cells, node_id, node_score, max_len, alpha, out, counts)


@numba.njit(cache=True, nogil=True, parallel=True)
def scatter_tokens(out, src, counts, dest, ids):
    """Copy each segment's ids from ``out[src[k]:]`` to ``ids[dest[k]:]``."""
    for k in prange(src.shape[0]):
        a = src[k]
        d = dest[k]
        for j in range(counts[k]):
            ids[d + j] = out[a + j]
