"""Numba CUDA kernels around the shared lattice (``gpu_bytepiece.core.lattice``).

The lattice body is not copied here: ``lattice`` and ``backtrack`` below are
the plain functions of ``gpu_bytepiece.core.lattice`` compiled with
``numba.cuda.jit(device=True)`` (float64, no fastmath), exactly as
``cpu_fallback`` compiles them with ``numba.njit``. The kernels differ from
their CPU twins only in how they loop over segments.

Kernels compile lazily on first launch (no driver is needed to import this
module). ``SIGNATURES`` holds the argument types the CUDA backend launches
them with; ``tests/test_ptx.py`` compiles each kernel to PTX with them.
"""

from __future__ import annotations

from numba import cuda

from gpu_bytepiece.core import lattice as _lat

__all__ = ["encode_segments", "scatter_tokens", "lattice", "backtrack", "SIGNATURES", "SCATTER_LANES"]

# The one lattice body, compiled for the GPU (no fastmath: ids depend on it).
lattice = cuda.jit(device=True)(_lat.lattice)
backtrack = cuda.jit(device=True)(_lat.backtrack)

#: Threads that copy one segment's ids in ``scatter_tokens`` (a warp).
SCATTER_LANES = 32


@cuda.jit
def encode_segments(data, seg_start, seg_end, seg_key, seg_pos, order,
                    cells, node_id, node_score, max_len, alpha,
                    best, back, out, counts):
    """Run the lattice over every segment: one thread per segment.

    Grid-stride loop over ``order``: global thread ``t`` takes segments
    ``order[t]``, ``order[t + stride]``, ... (``stride`` = threads in the
    grid). With ``order`` sorting segments by length, the threads of a warp
    get segments of about equal length and diverge little; any permutation
    gives the same result.

    Segment ``k`` (bytes ``data[seg_start[k]:seg_end[k]]``, ``n`` of them)
    uses scratch ``best`` and ``back`` at ``off .. off + n`` with
    ``off = seg_start[k] + k``: segments are disjoint and in text order, so
    these ranges are disjoint and the scratch needs
    ``len(data) + len(seg_start)`` cells (16 bytes each). Its ids go to
    ``out[seg_start[k]:...]`` (at most ``n`` of them) and their number to
    ``counts[k]``.

    Parameters
    ----------
    data : uint8[:]
    seg_start, seg_end, seg_pos : int64[:]
        Segment bounds in ``data``; byte position of the start in its document.
    seg_key : uint64[:]
        Sampling key of the segment's document.
    order : int64[:]
        A permutation of the segment indices (the order threads take them).
    cells : int64[:]
        The double-array trie, ``check << 32 | base`` per cell (``Trie.cells``).
    node_id : int32[:]
        Per trie cell: the id of the piece ending there (``Trie.node_id``;
        read by the backtrack).
    node_score : float64[:]
        The lattice's scores (per trie cell, ``-inf`` where no piece ends),
        or sampling weights (``alpha == LINEAR``; ``0.0`` where none ends).
    max_len : int64
    alpha : float64
        ``< 0``: best path; ``>= 0``: sample (see ``gpu_bytepiece.core.lattice``).
    best : float64[:]
    back : int64[:]
        Scratch, ``len(data) + len(seg_start)`` cells each (``back``: the
        trie cell where the chosen piece ending at each position ends, and
        its length).
    out : uint32[:]
        ``len(data)`` cells.
    counts : int64[:]

    See Also
    --------
    gpu_bytepiece.cpu_fallback.encode_segments : the CPU twin (``prange`` over
        chunks of segments; ``chunk_bounds`` instead of ``order``, scratch
        allocated per chunk instead of passed in, and a chunk's ids written
        back to back instead of each segment's at its own ``seg_start``).
    """
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    n_seg = order.shape[0]
    while t < n_seg:
        k = order[t]
        a = seg_start[k]
        b = seg_end[k]
        off = a + k
        lattice(data, a, b, cells, node_score, max_len,
                alpha, seg_key[k], seg_pos[k], best, back, off)
        counts[k] = backtrack(b - a, back, node_id, off, out, a)
        t += stride


@cuda.jit
def scatter_tokens(out, src, counts, dest, ids):
    """Copy each segment's ids from ``out[src[k]:]`` to ``ids[dest[k]:]``.

    ``SCATTER_LANES`` (32) consecutive global threads share a segment: lane
    ``j`` copies ids ``j, j + 32, ...``, so a warp reads and writes contiguous
    runs. Grid-stride loop over segments in steps of
    ``gridsize // SCATTER_LANES`` (threads past the last whole group of lanes
    idle; a grid smaller than ``SCATTER_LANES`` uses all its threads as lanes).

    See Also
    --------
    gpu_bytepiece.cpu_fallback.scatter_tokens : the CPU twin (``prange`` over
        segments).
    """
    n_thr = cuda.gridsize(1)
    lanes = SCATTER_LANES
    if n_thr < lanes:
        lanes = n_thr
    step = n_thr // lanes
    t = cuda.grid(1)
    lane = t % lanes
    n_seg = src.shape[0]
    k = t // lanes
    if t >= step * lanes:
        k = n_seg
    while k < n_seg:
        a = src[k]
        d = dest[k]
        c = counts[k]
        j = lane
        while j < c:
            ids[d + j] = out[a + j]
            j += lanes
        k += step


#: Argument types the CUDA backend launches each kernel with (C-contiguous
#: 1-d device arrays, int64 ``max_len``, float64 ``alpha``).
SIGNATURES = {
    "encode_segments": "void(" + ", ".join([
        "uint8[::1]", "int64[::1]", "int64[::1]", "uint64[::1]", "int64[::1]", "int64[::1]",
        "int64[::1]", "int32[::1]", "float64[::1]", "int64", "float64",
        "float64[::1]", "int64[::1]", "uint32[::1]", "int64[::1]",
    ]) + ")",
    "scatter_tokens": "void(uint32[::1], int64[::1], int64[::1], int64[::1], uint32[::1])",
}
