"""Device prefix sums and stream compaction: a plain two-level block scan.

``tile_sums`` (one block per tile), ``scan_in_place`` (one block over the
tile sums) and ``scan_tiles`` / ``compact_tiles`` / ``partition_tiles``
(one block per tile again, adding the tile's offset; each thread takes
``ITEMS`` consecutive elements per block-scan step). Integer sums, so any
order gives the same result. The CUDA backend's device-input path uses
them to number segments, place ids and pick long segments
(``backends.cuda_device``); their host twins are numpy's ``cumsum``,
``flatnonzero`` and a stable ``argsort``.

Every kernel loops grid-stride over tiles, so any launch size gives the
same result. The kernels use a static shared array of ``MAX_THREADS``
cells: launch them with at most that many threads per block.
"""

from __future__ import annotations

from numba import cuda, int64

__all__ = ["tile_sums", "scan_in_place", "scan_tiles", "compact_tiles", "partition_tiles",
           "tile_plan", "SIGNATURES", "MAX_THREADS", "ITEMS"]

#: Largest block the scanning kernels accept (their shared arrays' size).
MAX_THREADS = 1024
#: Consecutive elements one thread takes per block-scan step.
ITEMS = 8


def tile_plan(n):
    """How the kernels here cover ``n`` elements: ``(threads per block, tile, tiles, blocks)``.

    Blocks of ``config.THREADS_PER_BLOCK`` threads (at most ``MAX_THREADS``);
    a tile is at least one block-scan step (``ITEMS`` elements a thread) and
    large enough that there are at most ``config.CUDA_SCAN_MAX_TILES`` tiles,
    so ``scan_in_place`` scans their sums in one block; at most
    ``config.CUDA_MAX_BLOCKS`` blocks (the kernels loop over tiles), and at
    least one. Host code, shared by every caller of the scan.
    """
    from .. import config

    tpb = min(int(config.THREADS_PER_BLOCK), MAX_THREADS)
    tile = max(tpb * ITEMS, -(-n // int(config.CUDA_SCAN_MAX_TILES)))
    n_tiles = -(-n // tile)
    return tpb, tile, n_tiles, max(1, min(n_tiles, int(config.CUDA_MAX_BLOCKS)))


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
        ``backends.layout.segment_layout`` uses it for the same offsets.
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


@cuda.jit(device=True)
def _compact(sh, flags, tile, tile_off, base, out, rest):
    """The body of ``compact_tiles`` and ``partition_tiles``.

    Flagged ``i`` go to ``out[r] = i + base`` (``r``: flagged before
    ``i``); with ``rest >= 0`` the others go to ``out[rest + (unflagged
    before i)] = i + base`` too. ``sh``: the block's ``MAX_THREADS`` scan cells.
    """
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
            r = carry + excl  # flagged before element j + q
            for q in range(ITEMS):
                if j + q < hi:
                    if flags[j + q] != 0:
                        out[r] = j + q + base
                        r += 1
                    elif rest >= 0:
                        out[rest + j + q - r] = j + q + base
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
    _compact(sh, flags, tile, tile_off, base, out, -1)


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
    n_tiles = (flags.shape[0] + tile - 1) // tile
    _compact(sh, flags, tile, tile_off, 0, out, tile_off[n_tiles])


SIGNATURES = {
    "tile_sums": ("void(uint8[::1], int64, int64[::1])", "void(int64[::1], int64, int64[::1])"),
    "scan_in_place": "void(int64[::1], int64)",
    "scan_tiles": "void(int64[::1], int64, int64[::1], int64[::1])",
    "compact_tiles": "void(uint8[::1], int64, int64[::1], int64, int64[::1])",
    "partition_tiles": "void(uint8[::1], int64, int64[::1], int64[::1])",
}
