"""Long segments cooperatively: one thread block per segment.

``kernels.encode_segments`` gives each segment one thread, so a 1 MB line
would be walked byte by byte by a single GPU thread. Segments longer than
``config.CUDA_LONG_SEGMENT_BYTES`` go to ``encode_long_segments`` instead,
which splits the lattice of ``gpu_bytepiece.core.lattice.lattice`` in two:

1. **walk** (parallel): the block's *walker* threads walk the trie from
   ``rows`` consecutive start positions at once (``walk_matches``), each
   writing the pieces that start there, shortest first, to its row of a
   tile in shared memory;
2. **relax** (one thread, in lattice order): thread 0 applies the tile's
   matches start by start, each start's matches by increasing length
   (``relax_rows``). For a fixed end ``e`` candidates therefore arrive in
   increasing start (longest piece first), the order of the one-thread
   lattice; the arithmetic is the same (float64 ``best[s] + score`` with a
   strict ``>``; in sampling the same log-sum-exp and the same
   counter-based random numbers), so the result is bit for bit the CPU's,
   for the best path and for sampling alike.

The tile is double-buffered: while thread 0 relaxes tile ``t`` the walkers
fill tile ``t + 1``; one ``syncthreads`` per tile. The live ``best`` values
(positions ``i .. i + max_len``) sit in a ring in shared memory, so the
sequential part touches no global memory on its critical path. The back
pointers (the trie cell where each chosen piece ends, as in
``lattice.lattice``) go to the same global scratch ``back`` as the
one-thread kernel, and the backtrack reads them in windows staged into
shared memory by the whole block, which also looks up each cell's length
and id there (``node_len``, ``node_id``); thread 0 then follows the path
right to left, window after window, writing ids right-aligned; the block
then moves them to ``out[seg_start[k]:]``, the place the one-thread kernel
writes them.

``walk_matches`` and ``relax_rows`` are plain functions in the style of
``gpu_bytepiece.core.lattice`` (no allocation, no Python objects): compiled here
with ``cuda.jit(device=True)``, and with ``numba.njit`` by the tests, which
check that walking then relaxing tile by tile reproduces ``lattice.lattice``
exactly.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64, int32, uint8

from gpu_bytepiece.core import lattice as _lat

__all__ = ["encode_long_segments", "walk_matches", "relax_rows", "long_layout", "SIGNATURES"]

_POS_MUL = _lat._POS_MUL
_LEN_MUL = _lat._LEN_MUL
_GOLDEN = _lat._GOLDEN
_MIX1 = _lat._MIX1
_MIX2 = _lat._MIX2
_S30 = _lat._S30
_S27 = _lat._S27
_S31 = _lat._S31
_S11 = _lat._S11
_INV_2_53 = _lat._INV_2_53
_LOW32 = _lat._LOW32
_S32 = _lat._S32
CELL_BITS = _lat.CELL_BITS
_CELL_MASK = _lat._CELL_MASK
_LEN_ESCAPE = _lat._LEN_ESCAPE

#: Most walker rows per tile (a warp of walkers keeps up with the relaxing thread).
MAX_ROWS = 32
#: Longest piece the tiles can hold (lengths are stored as uint8).
MAX_PIECE = 255


def walk_matches(data, start, i, lim, cells, node_score,
                 row_score, row_cell, row_len, row_off):
    """The pieces that start at ``data[start + i]``, shortest first.

    Walks the double-array trie (``cells``: ``check << 32 | base`` per
    cell, as ``lattice.lattice`` walks it) for at most ``lim`` bytes and
    writes each piece found (a cell whose score is not ``-inf``) as
    ``row_score``, ``row_cell`` (the trie cell where it ends), ``row_len``
    at ``row_off``, ``row_off + 1``, ...; returns how many. A cell where no
    piece ends is skipped: in the lattice it scores ``-inf`` and can never
    win (Viterbi) or is skipped (sampling).
    """
    s = np.int64(0)
    count = 0
    for j in range(lim):
        t = (cells[s] & _LOW32) + data[start + i + j]
        if (cells[t] >> _S32) != s:
            break
        s = t
        sc = node_score[s]
        if sc > -math.inf:
            row_score[row_off + count] = sc
            row_cell[row_off + count] = s
            row_len[row_off + count] = j + 1
            count += 1
    return count


def relax_rows(i0, rows, row_score, row_cell, row_len, row_cnt, cnt_off, row_off, row_stride,
               ring, ring_mask, alpha, key, pos0, back, off):
    """Apply the matches of starts ``i0 .. i0 + rows - 1`` in lattice order.

    Row ``r`` (start ``i0 + r``) holds ``row_cnt[cnt_off + r]`` matches at
    ``row_off + r * row_stride`` (from ``walk_matches``). ``ring`` holds
    ``best`` of the live positions: position ``p`` in ``ring[p & ring_mask]``
    (``ring_mask + 1 > max_len``); the slot of a start is reset to ``-inf``
    once its matches are applied, ready for position ``start + ring size``.
    Back pointers (trie cell and length, packed) go to ``back[off + e]`` as
    in ``lattice.lattice``, whose arithmetic this repeats exactly.
    """
    if alpha < 0:
        for r in range(rows):
            i = i0 + r
            bs = ring[i & ring_mask]
            ro = row_off + r * row_stride
            for m in range(row_cnt[cnt_off + r]):
                ln = np.int64(row_len[ro + m])
                e = i + ln
                slot = e & ring_mask
                cand = bs + row_score[ro + m]
                if cand > ring[slot]:
                    ring[slot] = cand
                    back[off + e] = row_cell[ro + m] | (min(ln, _LEN_ESCAPE) << CELL_BITS)
            ring[i & ring_mask] = -math.inf
    else:
        for r in range(rows):
            i = i0 + r
            bs = ring[i & ring_mask]
            ro = row_off + r * row_stride
            for m in range(row_cnt[cnt_off + r]):
                ln = np.int64(row_len[ro + m])
                e = i + ln
                slot = e & ring_mask
                cand = bs + alpha * row_score[ro + m]
                x = ring[slot]
                if x < cand:
                    tot = cand + math.log(1.0 + math.exp(x - cand))
                else:
                    tot = x + math.log(1.0 + math.exp(cand - x))
                ring[slot] = tot
                # lattice.lattice's counter-based uniform: splitmix64 of (key, end, length)
                z = key ^ (np.uint64(pos0 + e) * _POS_MUL) ^ (np.uint64(ln) * _LEN_MUL)
                z = z + _GOLDEN
                z = (z ^ (z >> _S30)) * _MIX1
                z = (z ^ (z >> _S27)) * _MIX2
                z = z ^ (z >> _S31)
                u = np.float64(z >> _S11) * _INV_2_53
                if u < math.exp(cand - tot):
                    back[off + e] = row_cell[ro + m] | (min(ln, _LEN_ESCAPE) << CELL_BITS)
            ring[i & ring_mask] = -math.inf


def long_layout(max_len, threads, shared_bytes):
    """Tile geometry of ``encode_long_segments`` for a model and a block size.

    Returns ``(rows, stride, ring, win, nbytes)``: walker rows per tile,
    matches per row (``max_len``), ring slots (a power of two
    ``> max_len``), backtrack window (positions), and the dynamic shared
    memory to launch with. ``rows == 0`` means the cooperative path cannot
    run (block of one thread, piece longer than ``MAX_PIECE``, or not even
    one row fits ``shared_bytes``).
    """
    stride = max(1, int(max_len))
    ring = 1
    while ring <= stride:
        ring *= 2
    rows = min(int(threads) - 1, MAX_ROWS)
    if stride > MAX_PIECE:
        rows = 0

    def size(r):
        f64 = ring + 2 * r * stride
        i32 = 2 * r * stride + 2 * r
        u8 = 2 * r * stride
        return -(-(8 * f64 + 4 * i32 + u8) // 8) * 8

    while rows > 0 and size(rows) > shared_bytes:
        rows -= 1
    if rows <= 0:
        return 0, stride, ring, 0, 0
    nbytes = size(rows)
    win = (nbytes // 4 - 2) // 2
    return rows, stride, ring, win, nbytes


# The plain functions, compiled for the GPU (no fastmath: ids depend on them).
_walk = cuda.jit(device=True)(walk_matches)
_relax = cuda.jit(device=True)(relax_rows)


@cuda.jit
def encode_long_segments(data, seg_start, seg_end, seg_key, seg_pos, long_idx,
                         cells, node_id, node_len, node_score, max_len, alpha,
                         rows, stride, ring, win, back, out, counts):
    """The lattice of each long segment, by a whole thread block.

    Thread mapping: block ``b`` takes segments ``long_idx[b]``,
    ``long_idx[b + gridDim]``, ... (grid-stride over blocks). Within a
    block, thread 0 runs the sequential relaxations (``relax_rows``) and
    the backtrack; the last ``rows`` threads are walkers: walker ``w``
    walks the trie from start ``t * rows + w`` of tile ``t``
    (``walk_matches``); other threads only help stage backtrack windows
    and move the ids. Launch with dynamic shared memory ``long_layout(...)
    [4]`` bytes and ``rows``, ``stride``, ``ring``, ``win`` from the same
    call; ``blockDim > rows``.

    Segment ``k`` (``n`` bytes at ``data[seg_start[k]:]``) uses
    ``back`` at ``off .. off + n`` with
    ``off = seg_start[k] + k``, leaves its ids at ``out[seg_start[k]:]``
    and their number in ``counts[k]``: the same layout as
    ``encode_segments``, so both kernels share scratch, ``out`` and the
    scatter (a segment goes to exactly one of them). ``best`` is not used:
    the live values sit in the shared-memory ring.

    Parameters
    ----------
    long_idx : int64[:]
        Indices of the segments this kernel handles.
    rows, stride, ring, win : int64
        From ``long_layout(max_len, blockDim, shared_bytes)``.
    (others)
        As ``encode_segments``.

    See Also
    --------
    gpu_bytepiece.cpu_fallback.encode_segments : the CPU twin (one lattice
        per segment; the same ids, from ``lattice.lattice`` walked and
        relaxed start by start).
    encode_segments : the one-thread-per-segment kernel for the others.
    """
    shf = cuda.shared.array(0, dtype=float64)
    shi = cuda.shared.array(0, dtype=int32)
    shu = cuda.shared.array(0, dtype=uint8)
    tid = cuda.threadIdx.x
    nthr = cuda.blockDim.x
    w = tid - (nthr - rows)  # walker index, < 0 for non-walkers
    tile_cells = rows * stride
    f64n = ring + 2 * tile_cells
    sc_off = ring  # shf: ring | scores buf 0 | scores buf 1
    id_off = 2 * f64n  # shi: cells buf 0 | cells buf 1 | counts buf 0 | counts buf 1
    cnt_off = id_off + 2 * tile_cells
    len_off = 8 * f64n + 4 * (2 * tile_cells + 2 * rows)  # shu: lengths buf 0 | buf 1
    ring_mask = ring - 1
    n_long = long_idx.shape[0]
    b = cuda.blockIdx.x
    while b < n_long:
        k = long_idx[b]
        a = seg_start[k]
        n = seg_end[k] - a
        off = a + k
        key = seg_key[k]
        pos0 = seg_pos[k]
        if tid == 0:
            shf[0] = 0.0
            for p in range(1, ring):
                shf[p] = -math.inf
        n_tiles = (n + rows - 1) // rows
        for t in range(n_tiles + 1):
            if w >= 0 and t < n_tiles:
                buf = t & 1
                i = t * rows + w
                c = 0
                if i < n:
                    lim = n - i
                    if lim > max_len:
                        lim = max_len
                    ro = buf * tile_cells + w * stride
                    c = _walk(data, a, i, lim, cells, node_score,
                              shf[sc_off:], shi[id_off:], shu[len_off:], ro)
                shi[cnt_off + buf * rows + w] = c
            if tid == 0 and t > 0:
                buf = (t - 1) & 1
                i0 = (t - 1) * rows
                r = n - i0
                if r > rows:
                    r = rows
                _relax(i0, r, shf[sc_off:], shi[id_off:], shu[len_off:], shi,
                       cnt_off + buf * rows, buf * tile_cells, stride,
                       shf, ring_mask, alpha, key, pos0, back, off)
            cuda.syncthreads()
        # backtrack, right to left, in windows of ``win`` positions staged in shared memory:
        # the block loads each position's back cell and looks up its length and id
        if tid == 0:
            shi[0] = n  # the position reached
            shi[1] = 0  # ids written so far (right-aligned, in text order)
        cuda.syncthreads()
        while True:
            e = shi[0]
            if e <= 0:
                break
            lo = e - win
            if lo < 0:
                lo = 0
            p = lo + 1 + tid
            while p <= e:
                cell = back[off + p] & _CELL_MASK
                shi[2 + p - lo - 1] = node_len[cell]
                shi[2 + win + p - lo - 1] = node_id[cell]
                p += nthr
            cuda.syncthreads()
            if tid == 0:
                c = shi[1]
                while e > lo:
                    c += 1
                    out[a + n - c] = shi[2 + win + e - lo - 1]
                    e -= shi[2 + e - lo - 1]
                shi[0] = e
                shi[1] = c
            cuda.syncthreads()
        count = shi[1]
        if tid == 0:
            counts[k] = count
        shift = n - count
        if shift > 0:
            # move the ids left to out[a:]; read a block's worth, then write it
            j0 = 0
            while j0 < count:
                j = j0 + tid
                v = out[a]
                if j < count:
                    v = out[a + shift + j]
                cuda.syncthreads()
                if j < count:
                    out[a + j] = v
                cuda.syncthreads()
                j0 += nthr
        cuda.syncthreads()
        b += cuda.gridDim.x


SIGNATURES = {
    "encode_long_segments": "void(" + ", ".join([
        "uint8[::1]", "int64[::1]", "int64[::1]", "uint64[::1]", "int64[::1]", "int64[::1]",
        "int64[::1]", "int32[::1]", "int32[::1]", "float64[::1]", "int64", "float64",
        "int64", "int64", "int64", "int64",
        "int32[::1]", "uint32[::1]", "int64[::1]",
    ]) + ")",
}
