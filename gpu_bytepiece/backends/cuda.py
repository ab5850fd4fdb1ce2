"""The CUDA backend: the lattice on a GPU (Numba CUDA), the CPU backend's contract.

``CUDABackend.encode_packed`` takes a packed host batch and returns exactly
what ``backends.cpu.CPUBackend.encode_packed`` returns. The segment table
and the output layout are the CPU's (``backends.layout``), on the host; the
GPU runs the lattice and ``kernels.scatter_tokens``. ``encode_device``
(text already on the GPU, ids left there) is inherited from
``backends.cuda_device``, the device resources from ``backends._cuda_common``.

The host path runs a batch in chunks of whole segments: of at most
``config.CUDA_PIPELINE_BYTES`` text bytes, and within
``config.MAX_DEVICE_BYTES`` of device memory per chunk (half of it when
two chunks are in flight; one segment larger than that runs alone). The
chunks alternate between two streams with their own buffers: chunk
``k + 1`` is staged into pinned memory and uploaded while chunk ``k``'s
kernels run, and chunk ``k``'s ids come back while chunk ``k + 1``'s run
(double buffering; under the simulator all of this runs serially).
Segments that are not long go to threads longest first
(``config.CUDA_SORT_SEGMENTS``).
"""

from __future__ import annotations

import time

import numpy as np

from .. import config
from ._cuda_common import BYTES_PER_BYTE, BYTES_PER_SEGMENT
from .cuda_device import DeviceInput
from .layout import put_specials, segment_layout, segment_table

__all__ = ["CUDABackend", "plan_chunks", "segment_order", "BYTES_PER_BYTE", "BYTES_PER_SEGMENT"]


def plan_chunks(seg_len, budget_bytes, max_bytes=None):
    """Cut segments ``0..n`` into runs whose device footprint fits the budget.

    Returns int64 bounds ``[0, ..., n]``; chunk ``c`` is segments
    ``bounds[c]:bounds[c + 1]``. A segment too big on its own is a chunk.
    With ``max_bytes``, a chunk also holds at most that many text bytes
    (pipelining; again a longer segment is a chunk of its own).
    """
    n = len(seg_len)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    seg_len = np.asarray(seg_len, dtype=np.int64)
    cost = seg_len * BYTES_PER_BYTE + BYTES_PER_SEGMENT
    cum = np.cumsum(cost)
    cum_len = np.cumsum(seg_len)
    if cum[-1] <= budget_bytes and (max_bytes is None or cum_len[-1] <= max_bytes):
        return np.array([0, n], dtype=np.int64)
    bounds = [0]
    k0 = 0
    while k0 < n:
        before = cum[k0 - 1] if k0 else 0
        k1 = int(np.searchsorted(cum, before + budget_bytes, side="right"))
        if max_bytes is not None:
            before_len = cum_len[k0 - 1] if k0 else 0
            k1 = min(k1, int(np.searchsorted(cum_len, before_len + max_bytes, side="right")))
        k1 = max(k1, k0 + 1)
        bounds.append(k1)
        k0 = k1
    return np.array(bounds, dtype=np.int64)


def segment_order(seg_len):
    """Segment indices longest first (stable); the order threads take them in.

    A counting (radix) sort on lengths capped at 65535: O(n).
    """
    key = np.uint16(65535) - np.minimum(seg_len, 65535).astype(np.uint16)
    return np.argsort(key, kind="stable").astype(np.int64)



class CUDABackend(DeviceInput):
    """Numba CUDA: the lattice on device ``cuda:{device_index}``.

    One thread per segment, one thread block per long segment.

    Parameters
    ----------
    trie : Trie
    scores : float64 numpy array
        The score array the lattice reads, as ``backends.select_backend``
        prepares it (uploaded as is).
    device_index : int
        CUDA device number.

    Attributes
    ----------
    profile : bool
        When true, ``encode_packed`` records ``last_timings`` (seconds, summed
        over chunks: ``host``, ``h2d``, ``lattice``, ``scatter``, ``d2h``,
        ``total``) with CUDA events; off by default (events cost syncs, and
        profiling runs the chunks and the two lattice kernels one after
        another, without overlap).
    """

    # ----------------------------------------------------------- host input
    def encode_packed(self, data, doc_offsets, alpha, add_bos=False, add_eos=False, *,
                      stream_key=None, first_doc=0):
        """Encode a packed host batch; the contract of ``CPUBackend.encode_packed``."""
        t_start = time.perf_counter()
        data = np.ascontiguousarray(data, dtype=np.uint8)
        doc_offsets = np.ascontiguousarray(doc_offsets, dtype=np.int64)
        n_docs = len(doc_offsets) - 1
        table = segment_table(data, doc_offsets, stream_key, first_doc)
        seg_start, seg_end, seg_doc = table.start, table.end, table.doc
        n_seg = len(seg_start)
        counts = np.zeros(n_seg, dtype=np.int64)
        timings = dict.fromkeys(("host", "h2d", "lattice", "scatter", "d2h"), 0.0)
        if n_seg == 0:
            _, offsets = segment_layout(seg_doc, counts, n_docs, add_bos, add_eos)
            ids = np.empty(int(offsets[-1]), dtype=np.uint32)
            put_specials(ids, offsets, add_bos, add_eos)
            if self.profile:
                timings["total"] = timings["host"] = time.perf_counter() - t_start
                self.last_timings = timings
            return ids, offsets

        seg_len = seg_end - seg_start
        seg_key, seg_pos = table.key, table.pos
        extra = int(add_bos) + int(add_eos)
        budget = int(config.MAX_DEVICE_BYTES)
        pipe = int(config.CUDA_PIPELINE_BYTES)
        bounds = plan_chunks(seg_len, budget, pipe)
        if len(bounds) > 2:  # two chunks in flight: each gets half the device budget
            bounds = plan_chunks(seg_len, budget // 2, pipe)
        n_chunks = len(bounds) - 1
        parts = []  # (position in ids, host array)
        done = 0  # tokens of the segments before the chunk being finished
        plan = self._long_plan()
        seg = (data, seg_start, seg_end, seg_key, seg_pos, seg_len, seg_doc)
        with self._lock, self._device():
            scores_d, alpha_d = self._scores_for(alpha)
            slots = self._slots
            self._reserve(bounds, seg_start, seg_end, seg_doc, extra)
            for s in slots:
                s.pending = s.chunk = None
            prev = None
            for c in range(n_chunks + 1):
                if c < n_chunks:
                    slot = slots[c % 2]
                    slot.chunk = (int(bounds[c]), int(bounds[c + 1]))
                    self._enqueue_chunk(slot, seg, scores_d, alpha_d, plan, timings)
                if prev is not None:
                    done = self._finish_chunk(prev, seg, counts, done, extra, add_bos, parts, timings)
                prev = slot if c < n_chunks else None
            for s in slots:
                s.stream.synchronize()
                self._collect(s, parts)
        dest, offsets = segment_layout(seg_doc, counts, n_docs, add_bos, add_eos)
        total = int(offsets[-1])
        if len(parts) == 1 and parts[0][0] == 0 and len(parts[0][1]) == total:
            ids = parts[0][1]
        else:
            ids = np.empty(total, dtype=np.uint32)
            for pos0, host in parts:
                ids[pos0:pos0 + len(host)] = host
        put_specials(ids, offsets, add_bos, add_eos)
        if self.profile:
            timings["total"] = time.perf_counter() - t_start
            timings["host"] = timings["total"] - timings["h2d"] - timings["lattice"] \
                - timings["scatter"] - timings["d2h"]
            self.last_timings = timings
        return ids, offsets

    def _reserve(self, bounds, seg_start, seg_end, seg_doc, extra):
        """Grow the slots' device and pinned buffers to the call's largest chunk, up front.

        Inside the pipeline a buffer must never be replaced: a kernel or a
        copy of the other slot's stream, or of this slot's previous chunk,
        may still be using it.
        """
        k0, k1 = bounds[:-1], bounds[1:]
        m = int((k1 - k0).max())
        nb = int((seg_end[k1 - 1] - seg_start[k0]).max())
        span = int((seg_end[k1 - 1] - seg_start[k0] + extra * (seg_doc[k1 - 1] - seg_doc[k0] + 1)).max())
        sizes = {"data": (nb, np.uint8), "meta": (4 * m, np.int64), "key": (m, np.uint64),
                 "counts": (m, np.int64), "dest": (m, np.int64), "ids": (span, np.uint32)}
        dev = {"best": (nb + m, np.float64), "back": (nb + m, np.int64), "out": (nb, np.uint32)}
        for i in range(min(2, len(bounds) - 1)):
            for name, (n, dt) in sizes.items():
                self._pool.get(f"{name}{i}", n, dt)
                self._pinned.get(f"{name}{i}", n, dt)
            for name, (n, dt) in dev.items():
                self._pool.get(f"{name}{i}", n, dt)

    def _enqueue_chunk(self, slot, seg, scores_d, alpha_d, plan, timings):
        """Stage segments ``slot.chunk`` (rebased to their first byte) in pinned memory,
        upload them, launch the lattice and start fetching the counts, all on the slot's streams."""
        data, seg_start, seg_end, seg_key, seg_pos, seg_len, _ = seg
        k0, k1 = slot.chunk
        pool, pin = self._pool, self._pinned
        st = slot.stream
        aux = st if self.profile else slot.aux
        i = slot.index
        m = k1 - k0
        a0 = int(seg_start[k0])
        a1 = int(seg_end[k1 - 1])
        nb = a1 - a0
        lens = seg_len[k0:k1]
        order = segment_order(lens) if config.CUDA_SORT_SEGMENTS else np.arange(m, dtype=np.int64)
        if plan is not None:
            is_long = lens > plan[0]
            long_idx = np.flatnonzero(is_long).astype(np.int64)
            if len(long_idx):
                order = order[~is_long[order]]
        else:
            long_idx = np.zeros(0, dtype=np.int64)
        n_long = len(long_idx)
        # pinned staging (the previous user of this slot's buffers has finished: see _finish_chunk)
        h_data = pin.get(f"data{i}", nb, np.uint8)
        h_data[:] = data[a0:a1]
        h_meta = pin.get(f"meta{i}", 4 * m, np.int64)  # start | end | pos | order (short) + long
        np.subtract(seg_start[k0:k1], a0, out=h_meta[:m])
        np.subtract(seg_end[k0:k1], a0, out=h_meta[m:2 * m])
        h_meta[2 * m:3 * m] = seg_pos[k0:k1]
        h_meta[3 * m:4 * m - n_long] = order
        h_meta[4 * m - n_long:] = long_idx
        h_key = pin.get(f"key{i}", m, np.uint64)
        h_key[:] = seg_key[k0:k1]
        ev = self._timer(st)
        d_data = pool.get(f"data{i}", nb, np.uint8)
        d_data.copy_to_device(h_data, stream=st)
        d_meta = pool.get(f"meta{i}", 4 * m, np.int64)
        d_meta.copy_to_device(h_meta, stream=st)
        d_key = pool.get(f"key{i}", m, np.uint64)
        d_key.copy_to_device(h_key, stream=st)
        self._elapsed(ev, st, timings, "h2d")
        d_start = d_meta[:m]
        best = pool.get(f"best{i}", nb + m, np.float64)
        back = pool.get(f"back{i}", nb + m, np.int64)
        out = pool.get(f"out{i}", nb, np.uint32)
        d_counts = pool.get(f"counts{i}", m, np.int64)
        ev = self._timer(st)
        self._run_lattice(d_data, d_start, d_meta[m:2 * m], d_key, d_meta[2 * m:3 * m],
                          d_meta[3 * m:4 * m - n_long], d_meta[4 * m - n_long:4 * m], scores_d, alpha_d,
                          best, back, out, d_counts, st, aux, plan)
        self._elapsed(ev, st, timings, "lattice")
        h_counts = pin.get(f"counts{i}", m, np.int64)
        d_counts.copy_to_host(h_counts, stream=st)

    def _collect(self, slot, parts):
        """Keep the ids that reached ``slot``'s pinned buffer (its stream has been synchronized)."""
        if slot.pending is not None:
            pos0, span = slot.pending
            parts.append((pos0, np.array(self._pinned.buffers[f"ids{slot.index}"][:span])))
            slot.pending = None

    def _finish_chunk(self, slot, seg, counts, done, extra, add_bos, parts, timings):
        """Wait for the chunk's counts, then place its ids: scatter and start their download.

        Returns the number of tokens up to the end of this chunk.
        """
        seg_doc = seg[6]
        k0, k1 = slot.chunk
        pool, pin = self._pool, self._pinned
        st = slot.stream
        i = slot.index
        m = k1 - k0
        ev = self._timer(st)
        st.synchronize()  # counts are here; so are this slot's previous ids and uploads
        self._elapsed(ev, st, timings, "d2h")
        self._collect(slot, parts)
        cc = counts[k0:k1]
        cc[:] = pin.buffers[f"counts{i}"][:m]
        # where this chunk's ids go: layout.segment_layout's dest, chunk by chunk
        h_dest = pin.get(f"dest{i}", m, np.int64)
        h_dest[0] = 0
        np.cumsum(cc[:-1], out=h_dest[1:])
        h_dest += done + seg_doc[k0:k1] * extra + int(add_bos)
        pos0 = int(h_dest[0])
        span = int(h_dest[-1] + cc[-1]) - pos0
        h_dest -= pos0
        ev = self._timer(st)
        d_dest = pool.get(f"dest{i}", m, np.int64)
        d_dest.copy_to_device(h_dest, stream=st)
        self._elapsed(ev, st, timings, "h2d")
        d_ids = pool.get(f"ids{i}", span, np.uint32)
        ev = self._timer(st)
        blocks, tpb = self._launch(m * self._k.tokenize.SCATTER_LANES)
        self._scatter_kernel[blocks, tpb, st](pool.buffers[f"out{i}"], pool.buffers[f"meta{i}"][:m],
                                              pool.buffers[f"counts{i}"][:m], d_dest, d_ids)
        self._elapsed(ev, st, timings, "scatter")
        ev = self._timer(st)
        h_ids = pin.get(f"ids{i}", span, np.uint32)
        d_ids.copy_to_host(h_ids, stream=st)
        slot.pending = (pos0, span)
        if ev is not None:
            st.synchronize()
            self._elapsed(ev, st, timings, "d2h")
        return done + int(cc.sum())
