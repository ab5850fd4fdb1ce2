"""The CUDA engine: n-gram key counting, the n-gram Viterbi, piece counting and the pruning's splits on a GPU.

The host side of the kernels in ``gpu_bytepiece.kernels.train`` (and the
compaction of ``kernels.scan``): uploads, launches, downloads. The other
stages (segmenting, adding the long pieces to their hash table, building the
pruning's tokenizer) run on the CPU engine it wraps. Importing this module
needs numba-cuda but no GPU.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .. import config
from ..cpu_fallback import train as ct
from ..kernels import scan as ks
from ..kernels import train as kt

__all__ = ["CUDAEngine", "GPUNgramModel", "gpu_count_keys", "gpu_count_pieces", "gpu_ngram_viterbi", "gpu_split"]


def _grid(n):
    tpb = config.THREADS_PER_BLOCK
    blocks = max(1, min((n + tpb - 1) // tpb, config.CUDA_MAX_BLOCKS))
    return blocks, tpb


def _count_table(n_pos):
    """An empty count table for ``n_pos`` keys: ``(table, counts, shift, mask)`` (all 0, >= 2 n_pos slots)."""
    bits = max(4, int(2 * n_pos - 1).bit_length())
    cap = 1 << bits
    table = cuda.device_array(cap, dtype=np.uint64)
    counts = cuda.device_array(cap, dtype=np.int64)
    kt.fill_u64[_grid(cap)](table, np.uint64(0))
    kt.fill_u64[_grid(cap)](counts.view(np.uint64), np.uint64(0))
    return table, counts, np.uint64(64 - bits), np.uint64(cap - 1)


def _sorted_counts(table, counts, n_max):
    """The used slots of a count table (at most ``n_max``) on the host, sorted by key: ``(keys, counts)``."""
    n_max = min(table.shape[0], n_max)
    n_out = cuda.to_device(np.zeros(1, dtype=np.int64))
    out_keys = cuda.device_array(n_max, dtype=np.uint64)
    out_counts = cuda.device_array(n_max, dtype=np.int64)
    kt.compact_counts[_grid(table.shape[0])](table, counts, out_keys, out_counts, n_out)
    n = int(n_out.copy_to_host()[0])
    keys = out_keys[:n].copy_to_host()
    cnts = out_counts[:n].copy_to_host()
    order_ = np.argsort(keys, kind="stable")
    return keys[order_], cnts[order_]


def _compact(flags, base):
    """``flatnonzero(flags) + base`` on the device (``kernels.scan``: tile sums, their scan, compaction)."""
    tpb, tile, n_tiles, blocks = ks.tile_plan(flags.shape[0])
    sums = cuda.device_array(n_tiles + 1, dtype=np.int64)
    if n_tiles:
        ks.tile_sums[blocks, tpb](flags, tile, sums)
    ks.scan_in_place[1, tpb](sums, n_tiles)
    out = cuda.device_array(int(sums[n_tiles:].copy_to_host()[0]), dtype=np.int64)
    if out.shape[0]:
        ks.compact_tiles[blocks, tpb](flags, tile, sums, base, out)
    return out


def _device(a, dtype):
    """``a`` if it is a device array, else a contiguous ``dtype`` copy of it on the device."""
    return a if hasattr(a, "copy_to_host") else cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


def gpu_count_keys(data, seg_start, seg_end, order):
    """Sorted ``(distinct position keys, counts)`` of the positions of ``seg_start..seg_end``.

    The GPU twin of ``cpu_fallback.train``'s position keys + sort +
    ``run_lengths`` (the host sorts the distinct keys the GPU counted).
    ``data`` may be a host or device array.
    """
    pos0 = int(seg_start[0])
    n_pos = int(seg_end[-1]) - pos0
    table, counts, shift, mask = _count_table(n_pos)
    kt.count_position_keys[_grid(n_pos)](_device(data, np.uint8), _device(seg_start, np.int64),
                                         _device(seg_end, np.int64), pos0, n_pos, order, table, counts,
                                         shift, mask)
    return _sorted_counts(table, counts, n_pos)


def gpu_count_pieces(data, flags, seg_start, seg_end):
    """The pieces of segments ``seg_start..seg_end`` (cut at ``flags``), counted on the GPU.

    The GPU twin of :meth:`CPUEngine.extract_pieces
    <gpu_bytepiece.train.engines.CPUEngine.extract_pieces>` followed by
    ``short_run``: ``(keys, counts, long_start, long_len)``, the sorted
    distinct packed keys of the pieces of up to 7 bytes and their counts
    (``count_piece_keys``, a hash table as ``gpu_count_keys``), and the
    longer pieces as spans in text order (their starts flagged by the same
    kernel, listed by ``kernels.scan``'s compaction, measured by
    ``long_piece_lengths``), for the host's table of long pieces. ``data``
    and ``flags`` may be host or device arrays.
    """
    pos0 = int(seg_start[0])
    n_pos = int(seg_end[-1]) - pos0
    d_flags = _device(flags, np.uint8)
    d_end = _device(seg_end, np.int64)
    table, counts, shift, mask = _count_table(n_pos)
    long_flags = cuda.device_array(n_pos, dtype=np.uint8)
    kt.count_piece_keys[_grid(n_pos)](_device(data, np.uint8), d_flags, _device(seg_start, np.int64), d_end,
                                      pos0, n_pos, table, counts, shift, mask, long_flags)
    keys, cnts = _sorted_counts(table, counts, n_pos)
    long_start = _compact(long_flags, pos0)
    long_len = cuda.device_array(long_start.shape[0], dtype=np.int64)
    if long_start.shape[0]:
        kt.long_piece_lengths[_grid(long_start.shape[0])](d_flags, d_end, long_start, long_len)
    return keys, cnts, long_start.copy_to_host(), long_len.copy_to_host()


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
                      (trie.cells, trie.node_id, node_score)]
        if pool is not last_pool:
            last_pool, d_pool = pool, cuda.to_device(pool)
        ln = np.ascontiguousarray(ln, dtype=np.int64)
        out_start = np.zeros(ln.shape[0], dtype=np.int64)
        np.cumsum(ln[:-1], out=out_start[1:])
        total = int(out_start[-1] + ln[-1])
        order = np.argsort(-ln, kind="stable").astype(np.int64)
        cells, node_id, d_score = d_trie
        kt.split_pieces[_grid(ln.shape[0])](
            d_pool, cuda.to_device(np.ascontiguousarray(off, dtype=np.int64)), cuda.to_device(ln),
            cuda.to_device(out_start), cuda.to_device(order), cells, node_id, d_score,
            int(trie.max_len), cuda.to_device(np.ascontiguousarray(w, dtype=np.int64)),
            cuda.device_array(total + ln.shape[0], dtype=np.float64),
            cuda.device_array(total + ln.shape[0], dtype=np.int64), cuda.device_array(total, dtype=np.int32),
            d_result)
    return d_result.copy_to_host()


class CUDAEngine:
    """The trainer's stages with n-gram counting, the Viterbi, piece counting and the pruning's splits on a GPU.

    Wraps the CPU engine (:class:`~gpu_bytepiece.train.engines.CPUEngine`):
    segmenting, adding the long pieces (over 7 bytes, found and measured on
    the GPU) to their hash table and building the pruning's tokenizer run
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

    def piece_runs(self, data, flags, seg_start, seg_end):
        """:meth:`CPUEngine.piece_runs` on the GPU, in sub-batches of ``config.CUDA_BATCH_BYTES``.

        Each sub-batch is ``gpu_count_pieces``; their sorted runs are merged
        and their long pieces put end to end (text order).
        """
        keys = np.zeros(0, dtype=np.uint64)
        counts = np.zeros(0, dtype=np.int64)
        starts, lens = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        subs = self.cpu._sub_batches(seg_start, seg_end, config.CUDA_BATCH_BYTES)
        if subs:
            d_data, d_flags = cuda.to_device(data), cuda.to_device(flags)
        for s0, s1 in subs:
            k, c, ls, ll = gpu_count_pieces(d_data, d_flags, seg_start[s0:s1], seg_end[s0:s1])
            keys, counts = ct.merge_runs(keys, counts, k, c) if keys.shape[0] else (k, c)
            starts.append(ls)
            lens.append(ll)
        return keys, counts, np.concatenate(starts), np.concatenate(lens)

    def count_pieces(self, data, flags, seg_start, seg_end, table):
        """:meth:`CPUEngine.count_pieces` with the pieces found and the short ones counted on the GPU.

        :meth:`piece_runs`, then the long pieces go into ``table`` on the
        host, in text order, as the CPU engine adds them.
        """
        keys, counts, long_start, long_len = self.piece_runs(data, flags, seg_start, seg_end)
        return keys, counts, self.cpu.add_long_pieces(data, long_start, long_len, table)

    def split(self, pieces, K, cK, batches):
        """:meth:`CPUEngine.split` on the GPU (the tokenizer is built on the host, once)."""
        return self.cpu.split_lazily(self.split_with, pieces, K, cK, batches)

    def split_with(self, trie, node_score, batches, nK):
        """:meth:`CPUEngine.split_with` on the GPU."""
        return gpu_split(trie, node_score, batches, nK)

    def close(self):
        """Close the CPU engine."""
        self.cpu.close()
