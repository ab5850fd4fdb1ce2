"""Numba CUDA kernels of the trainer: n-gram counting and the n-gram Viterbi.

The per-position key and the per-segment Viterbi are the plain functions of
:mod:`gpu_bytepiece.trainer` compiled with ``numba.cuda.jit(device=True)``
(float64 additions only, no fastmath; no multiply to contract into an FMA),
exactly as ``cpu_fallback.train`` compiles them with ``numba.njit``. The
kernels differ from their CPU twins only in how they loop and in how equal
keys meet (a hash table with atomics here, a sort there): both give the same
sorted ``(key, count)`` runs and the same segmentations.

:class:`CUDAEngine` runs the trainer's counting and Viterbi stages with these
kernels (piece counting and pruning stay on the CPU). Importing this module
needs numba-cuda but no GPU; kernels compile on first launch.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from gpu_bytepiece import config
from gpu_bytepiece import trainer as _tr

__all__ = ["count_position_keys", "compact_counts", "ngram_viterbi_segments", "fill_u64",
           "CUDAEngine", "SIGNATURES"]

# The shared bodies, compiled for the GPU.
position_key = cuda.jit(device=True)(_tr.position_key)
ngram_viterbi = cuda.jit(device=True)(_tr.ngram_viterbi)

_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)
#: Local scratch per thread: one float64 per tag (``order <= MAX_ORDER``).
_LOCAL = _tr.MAX_ORDER + 1


@cuda.jit
def fill_u64(a, value):
    """``a[:] = value`` (grid-stride)."""
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < a.shape[0]:
        a[t] = value
        t += stride


@cuda.jit
def count_position_keys(data, seg_start, seg_end, pos0, n_pos, order, table, counts, shift, mask):
    """Hash-count the position keys of positions ``pos0 .. pos0 + n_pos``.

    Grid-stride over positions, one per thread: the thread finds its segment
    (binary search in ``seg_end``; segments tile the positions), computes
    :func:`gpu_bytepiece.trainer.position_key` and inserts it in an
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
    n_seg = seg_end.shape[0]
    while t < n_pos:
        p = pos0 + t
        lo = 0
        hi = n_seg
        while lo < hi:
            mid = (lo + hi) // 2
            if seg_end[mid] > p:
                hi = mid
            else:
                lo = mid + 1
        key = position_key(data, p, seg_end[lo], order)
        h = (key * _HASH_MUL) >> shift
        while True:
            old = cuda.atomic.cas(table, np.int64(h), np.uint64(0), key)
            if old == 0 or old == key:
                cuda.atomic.add(counts, np.int64(h), 1)
                break
            h = (h + np.uint64(1)) & mask
        t += stride


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
    """Run :func:`gpu_bytepiece.trainer.ngram_viterbi` over every segment.

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


#: Argument types each kernel is launched with (C-contiguous 1-d arrays).
SIGNATURES = {
    "fill_u64": "void(uint64[::1], uint64)",
    "count_position_keys": "void(uint8[::1], int64[::1], int64[::1], int64, int64, int64, "
                           "uint64[::1], int64[::1], uint64, uint64)",
    "compact_counts": "void(uint64[::1], int64[::1], uint64[::1], int64[::1], int64[::1])",
    "ngram_viterbi_segments": "void(uint8[::1], int64[::1], int64[::1], int64[::1], int64, boolean, "
                              "float64[::1], float64[::1], uint64[::1], float64[::1], uint64, uint64, "
                              "uint8[::1], uint8[::1])",
}


def _grid(n):
    tpb = config.THREADS_PER_BLOCK
    blocks = max(1, min((n + tpb - 1) // tpb, config.CUDA_MAX_BLOCKS))
    return blocks, tpb


def gpu_count_keys(data, seg_start, seg_end, order):
    """Sorted ``(distinct position keys, counts)`` of the positions of ``seg_start..seg_end``.

    The GPU twin of ``cpu_fallback.train``'s position keys + sort +
    ``run_lengths`` (the host sorts the distinct keys the GPU counted).
    ``data`` may be a host or device array.
    """
    pos0 = int(seg_start[0])
    n_pos = int(seg_end[-1]) - pos0
    bits = max(4, int(2 * n_pos - 1).bit_length())
    cap = 1 << bits
    d_data = data if hasattr(data, "copy_to_host") else cuda.to_device(data)
    d_start = cuda.to_device(np.ascontiguousarray(seg_start, dtype=np.int64))
    d_end = cuda.to_device(np.ascontiguousarray(seg_end, dtype=np.int64))
    table = cuda.device_array(cap, dtype=np.uint64)
    counts = cuda.device_array(cap, dtype=np.int64)
    fill_u64[_grid(cap)](table, np.uint64(0))
    fill_u64[_grid(cap)](counts.view(np.uint64), np.uint64(0))
    count_position_keys[_grid(n_pos)](d_data, d_start, d_end, pos0, n_pos, order, table, counts,
                                      np.uint64(64 - bits), np.uint64(cap - 1))
    n_out = cuda.to_device(np.zeros(1, dtype=np.int64))
    out_keys = cuda.device_array(min(cap, n_pos), dtype=np.uint64)
    out_counts = cuda.device_array(min(cap, n_pos), dtype=np.int64)
    compact_counts[_grid(cap)](table, counts, out_keys, out_counts, n_out)
    n = int(n_out.copy_to_host()[0])
    keys = out_keys[:n].copy_to_host()
    cnts = out_counts[:n].copy_to_host()
    order_ = np.argsort(keys, kind="stable")
    return keys[order_], cnts[order_]


class GPUNgramModel:
    """An :class:`~gpu_bytepiece.trainer.NgramModel`'s arrays on the device."""

    def __init__(self, ng):
        self.order = ng.order
        self.lp1 = cuda.to_device(ng.lp1)
        self.lp2 = cuda.to_device(ng.lp2)
        self.ht = cuda.to_device(ng.ht)
        self.htf = self.ht.view(np.float64)
        self.ht_shift = ng.ht_shift
        self.ht_mask = ng.ht_mask


def gpu_ngram_viterbi(data, seg_start, seg_end, gm, ensure_unicode):
    """Piece-start flags (uint8 per byte, host) of the segments, on the GPU."""
    n = int(data.shape[0])
    flags = np.zeros(n, dtype=np.uint8)
    if seg_start.shape[0] == 0:
        return flags
    seg_len = np.asarray(seg_end) - np.asarray(seg_start)
    seg_order = np.argsort(-seg_len, kind="stable").astype(np.int64)
    d_data = cuda.to_device(data)
    d_start = cuda.to_device(np.ascontiguousarray(seg_start, dtype=np.int64))
    d_end = cuda.to_device(np.ascontiguousarray(seg_end, dtype=np.int64))
    d_order = cuda.to_device(seg_order)
    routes = cuda.device_array(max(1, n * gm.order), dtype=np.uint8)
    d_flags = cuda.to_device(flags)
    ngram_viterbi_segments[_grid(seg_order.shape[0])](
        d_data, d_start, d_end, d_order, gm.order, bool(ensure_unicode), gm.lp1, gm.lp2,
        gm.ht, gm.htf, gm.ht_shift, gm.ht_mask, routes, d_flags)
    return d_flags.copy_to_host()


class CUDAEngine:
    """The trainer's stages with n-gram counting and the Viterbi on a GPU.

    Wraps the CPU engine (``gpu_bytepiece.trainer._CPUEngine``): segmenting,
    piece counting and pruning run there.
    """

    def __init__(self, cpu, index=0):
        self.cpu = cpu
        self.index = index
        cuda.select_device(index)
        self.name = f"cuda:{index}"

    def __getattr__(self, name):
        return getattr(self.cpu, name)

    def count_keys(self, data, seg_start, seg_end):
        d_data = cuda.to_device(data)
        out = []
        for s0, s1 in self.cpu._sub_batches(seg_start, seg_end, config.CUDA_BATCH_BYTES):
            out.append(gpu_count_keys(d_data, seg_start[s0:s1], seg_end[s0:s1], self.cpu.t.order))
        return out

    def viterbi(self, ng):
        gm = GPUNgramModel(ng)
        ensure_unicode = self.cpu.t.ensure_unicode

        def run(data, seg_start, seg_end):
            return gpu_ngram_viterbi(data, seg_start, seg_end, gm, ensure_unicode)

        return run

    def close(self):
        self.cpu.close()
