"""The CUDA engine: n-gram key counting, the n-gram Viterbi and the pruning's piece splitting on a GPU.

The host side of the kernels in ``gpu_bytepiece.kernels.train``: uploads,
launches, downloads. Every other stage (segmenting, gathering the pieces of
the flags, building the pruning's tokenizer) runs on the CPU engine it wraps.
Importing this module needs numba-cuda but no GPU.
"""

from __future__ import annotations

import itertools

import numpy as np
from numba import cuda

from .. import config
from ..kernels import train as kt

__all__ = ["CUDAEngine", "GPUNgramModel", "gpu_count_keys", "gpu_ngram_viterbi", "gpu_split"]


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
    kt.fill_u64[_grid(cap)](table, np.uint64(0))
    kt.fill_u64[_grid(cap)](counts.view(np.uint64), np.uint64(0))
    kt.count_position_keys[_grid(n_pos)](d_data, d_start, d_end, pos0, n_pos, order, table, counts,
                                         np.uint64(64 - bits), np.uint64(cap - 1))
    n_out = cuda.to_device(np.zeros(1, dtype=np.int64))
    out_keys = cuda.device_array(min(cap, n_pos), dtype=np.uint64)
    out_counts = cuda.device_array(min(cap, n_pos), dtype=np.int64)
    kt.compact_counts[_grid(cap)](table, counts, out_keys, out_counts, n_out)
    n = int(n_out.copy_to_host()[0])
    keys = out_keys[:n].copy_to_host()
    cnts = out_counts[:n].copy_to_host()
    order_ = np.argsort(keys, kind="stable")
    return keys[order_], cnts[order_]


class GPUNgramModel:
    """A :class:`~gpu_bytepiece.train.ngrams.NgramModel`'s arrays on the device."""

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
    kt.ngram_viterbi_segments[_grid(seg_order.shape[0])](
        d_data, d_start, d_end, d_order, gm.order, bool(ensure_unicode), gm.lp1, gm.lp2,
        gm.ht, gm.htf, gm.ht_shift, gm.ht_mask, routes, d_flags)
    return d_flags.copy_to_host()


def gpu_split(trie, node_score, batches, n_ids):
    """:meth:`CPUEngine.split`'s counts on the GPU: ``n_ids`` token counts of the pieces of ``batches``.

    ``trie`` and ``node_score`` are :meth:`CPUEngine.split_tokenizer`'s
    (uploaded once); each batch ``(pool, off, ln, weights)`` is uploaded
    (a pool seen in the batch before is reused) and split by the
    ``split_pieces`` kernel, which adds into one device array of counts.
    """
    d_result = cuda.to_device(np.zeros(n_ids, dtype=np.int64))
    d_trie = None
    last_pool = d_pool = None
    for pool, off, ln, w in batches:
        if ln.shape[0] == 0:
            continue
        if d_trie is None:
            d_trie = [cuda.to_device(np.ascontiguousarray(a)) for a in
                      (trie.cells, trie.node_id, trie.node_len, node_score)]
        if pool is not last_pool:
            last_pool, d_pool = pool, cuda.to_device(pool)
        ln = np.ascontiguousarray(ln, dtype=np.int64)
        out_start = np.zeros(ln.shape[0], dtype=np.int64)
        np.cumsum(ln[:-1], out=out_start[1:])
        total = int(out_start[-1] + ln[-1])
        order = np.argsort(-ln, kind="stable").astype(np.int64)
        cells, node_id, node_len, d_score = d_trie
        kt.split_pieces[_grid(ln.shape[0])](
            d_pool, cuda.to_device(np.ascontiguousarray(off, dtype=np.int64)), cuda.to_device(ln),
            cuda.to_device(out_start), cuda.to_device(order), cells, node_id, node_len, d_score,
            int(trie.max_len), cuda.to_device(np.ascontiguousarray(w, dtype=np.int64)),
            cuda.device_array(total + ln.shape[0], dtype=np.float64),
            cuda.device_array(total + ln.shape[0], dtype=np.int32), cuda.device_array(total, dtype=np.int32),
            d_result)
    return d_result.copy_to_host()


class CUDAEngine:
    """The trainer's stages with n-gram counting, the Viterbi and the pruning's splits on a GPU.

    Wraps the CPU engine (:class:`~gpu_bytepiece.train.engines.CPUEngine`):
    segmenting, gathering pieces and building the pruning's tokenizer run
    there.
    """

    def __init__(self, cpu, index=0):
        self.cpu = cpu
        self.index = index
        cuda.select_device(index)
        self.name = f"cuda:{index}"

    def __getattr__(self, name):
        return getattr(self.cpu, name)

    def count_keys(self, data, seg_start, seg_end):
        """:meth:`CPUEngine.count_keys` on the GPU, in sub-batches of ``config.CUDA_BATCH_BYTES``."""
        d_data = cuda.to_device(data)
        out = []
        for s0, s1 in self.cpu._sub_batches(seg_start, seg_end, config.CUDA_BATCH_BYTES):
            out.append(gpu_count_keys(d_data, seg_start[s0:s1], seg_end[s0:s1], self.cpu.t.order))
        return out

    def viterbi(self, ng):
        """:meth:`CPUEngine.viterbi` on the GPU (the n-gram model is uploaded once)."""
        gm = GPUNgramModel(ng)
        ensure_unicode = self.cpu.t.ensure_unicode

        def run(data, seg_start, seg_end):
            return gpu_ngram_viterbi(data, seg_start, seg_end, gm, ensure_unicode)

        return run

    def split(self, pieces, K, cK, batches):
        """:meth:`CPUEngine.split` on the GPU (the tokenizer is built on the host, once)."""
        batches = iter(batches)
        first = next(batches, None)
        if first is None:
            return np.zeros(K.shape[0], dtype=np.int64)
        trie, node_score = self.cpu.split_tokenizer(pieces, K, cK)
        return gpu_split(trie, node_score, itertools.chain([first], batches), K.shape[0])

    def close(self):
        """Close the CPU engine."""
        self.cpu.close()
