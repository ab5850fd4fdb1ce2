"""Long segments cooperatively: one thread block per segment.

``kernels.encode_segments`` gives each segment one thread, so a 1 MB line
would be walked byte by byte by a single GPU thread. Segments longer than
``config.CUDA_LONG_SEGMENT_BYTES`` go to ``encode_long_segments`` instead,
which splits the lattice of ``gpu_bytepiece.core.lattice.lattice`` in two:

1. **walk** (parallel): the block's *walker* threads walk the reversed
   trie backward from ``rows`` consecutive end positions at once
   (``walk_matches``), each writing the pieces that end there, shortest
   first, to its row of a tile in shared memory;
2. **relax** (one thread, in lattice order): thread 0 applies the tile's
   matches end by end, each end's matches by increasing length
   (``relax_rows``): the order of the one-thread lattice, whose
   arithmetic it repeats (float64 ``best[s] + score`` kept on ``>=``; in
   sampling the same weights or log-sum-exp, the same rescaling and the
   same counter-based random numbers), so the result is bit for bit the
   CPU's, for the best path and for sampling alike.

The tile is double-buffered: while thread 0 relaxes tile ``t`` the walkers
fill tile ``t + 1``; one ``syncthreads`` per tile. The live ``best`` values
(positions ``e - max_len .. e``) sit in a ring in shared memory, so the
sequential part touches no global memory on its critical path. The back
pointers (the trie cell where each chosen piece ends, as in
``lattice.lattice``) go to the same global scratch ``back`` as the
one-thread kernel, and the backtrack reads them in windows staged into
shared memory by the whole block, which also takes each piece's length
from its pointer and looks its id up there (``node_id``); thread 0 then
follows the path right to left, window after window, writing ids
right-aligned; the block then moves them to ``out[seg_start[k]:]``, the
place the one-thread kernel writes them.

``walk_matches`` and ``relax_rows`` are the plain functions of
``gpu_bytepiece.core.long`` (no allocation, no Python objects, no CUDA),
compiled here with ``cuda.jit(device=True)``; the tests compile them with
``numba.njit`` and check that walking then relaxing tile by tile reproduces
``lattice.lattice`` exactly. What stays here is CUDA: the shared-memory
tiles, the barriers, the windowed backtrack and ``long_layout``, the tile
geometry the host launches with.
"""

from __future__ import annotations

from numba import cuda, float64, int32, uint8

from gpu_bytepiece.core import lattice as _lat
from gpu_bytepiece.core.lattice import initial_best
from gpu_bytepiece.core.long import relax_rows, walk_matches

__all__ = ["encode_long_segments", "long_layout", "SIGNATURES"]

_LOW32 = _lat._LOW32
_S32 = _lat._S32

#: Most walker rows per tile (a warp of walkers keeps up with the relaxing thread).
MAX_ROWS = 32
#: Longest piece the tiles can hold (lengths are stored as uint8).
MAX_PIECE = 255


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
                         cells, node_id, node_score, max_len, alpha,
                         rows, stride, ring, win, back, out, counts):
    """The lattice of each long segment, by a whole thread block.

    Thread mapping: block ``b`` takes segments ``long_idx[b]``,
    ``long_idx[b + gridDim]``, ... (grid-stride over blocks). Within a
    block, thread 0 runs the sequential relaxations (``relax_rows``) and
    the backtrack; the last ``rows`` threads are walkers: walker ``w``
    walks the reversed trie back from end ``t * rows + w + 1`` of tile ``t``
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
        relaxed end by end).
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
            first, rest = initial_best(alpha)
            shf[0] = first
            for p in range(1, ring):
                shf[p] = rest
        n_tiles = (n + rows - 1) // rows
        for t in range(n_tiles + 1):
            if w >= 0 and t < n_tiles:
                buf = t & 1
                e = t * rows + w + 1
                c = 0
                if e <= n:
                    lim = e
                    if lim > max_len:
                        lim = max_len
                    ro = buf * tile_cells + w * stride
                    c = _walk(data, a, e, lim, cells, node_score,
                              shf[sc_off:], shi[id_off:], shu[len_off:], ro)
                shi[cnt_off + buf * rows + w] = c
            if tid == 0 and t > 0:
                buf = (t - 1) & 1
                e0 = (t - 1) * rows
                r = n - e0
                if r > rows:
                    r = rows
                _relax(e0 + 1, r, shf[sc_off:], shi[id_off:], shu[len_off:], shi,
                       cnt_off + buf * rows, buf * tile_cells, stride,
                       shf, ring_mask, alpha, key, pos0, back, off)
            cuda.syncthreads()
        # backtrack, right to left, in windows of ``win`` positions staged in shared memory:
        # the block loads each position's back pointer: its piece's length and, looked up, id
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
                ptr = back[off + p]
                shi[2 + p - lo - 1] = ptr >> _S32
                shi[2 + win + p - lo - 1] = node_id[ptr & _LOW32]
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
        "int64[::1]", "int32[::1]", "float64[::1]", "int64", "float64",
        "int64", "int64", "int64", "int64",
        "int64[::1]", "uint32[::1]", "int64[::1]",
    ]) + ")",
}
