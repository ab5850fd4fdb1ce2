"""CUDA backend: the shared lattice on a GPU (Numba CUDA), same contract as the CPU.

``CUDABackend.encode_packed`` takes a packed batch and returns exactly what
``backend.CPUBackend.encode_packed`` returns. Segmentation
(``cpu_fallback.find_segments``) and the output layout
(``backend.segment_layout`` / ``backend.finish_specials``) are the CPU's,
on the host; the GPU runs ``kernels.encode_segments`` (one thread per
segment, the shared ``lattice.lattice`` as a device function) and
``kernels.scatter_tokens``.

Per backend (one per device):

- the trie and the scores are uploaded once and stay on the device;
- device buffers (text, segment arrays, scratch, ids) come from a grow-only
  pool reused by every call;
- a batch whose device footprint would exceed ``config.MAX_DEVICE_BYTES``
  runs in chunks of whole segments (one segment larger than the budget runs
  alone in its own chunk);
- segments are handed to threads longest first (``config.CUDA_SORT_SEGMENTS``).

Exactness: the best path (``alpha < 0``) adds float64 scores, which is the
same IEEE arithmetic on both devices. For sampling, NVVM contracts
``bs + alpha * score`` into one fused multiply-add (numba-cuda offers no
switch for that, even without fastmath), which could differ from the CPU's
two roundings; the backend therefore uploads ``alpha * scores`` computed on
the host in numpy (the CPU's products, bit for bit) and runs the lattice with
``alpha = 1.0``, where the fused and unfused forms agree exactly.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from . import config
from .backend import DeviceError, finish_specials, segment_layout
from .trie import Trie

__all__ = ["CUDABackend", "plan_chunks", "segment_order"]

#: Device bytes per input byte: text 1, scratch 8 + 4 + 4, ``out`` 4, ids 4.
BYTES_PER_BYTE = 25
#: Device bytes per segment: 7 int64 arrays, one more scratch cell (16),
#: up to two special ids (8).
BYTES_PER_SEGMENT = 80
#: Pool buffers grow in steps of this many elements.
_POOL_STEP = 1 << 16
#: Sampling temperatures whose pre-scaled scores stay on the device.
_SCALED_CACHE = 4


def plan_chunks(seg_len, budget_bytes):
    """Cut segments ``0..n`` into runs whose device footprint fits the budget.

    Returns int64 bounds ``[0, ..., n]``; chunk ``c`` is segments
    ``bounds[c]:bounds[c + 1]``. A segment too big on its own is a chunk.
    """
    n = len(seg_len)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    cost = np.asarray(seg_len, dtype=np.int64) * BYTES_PER_BYTE + BYTES_PER_SEGMENT
    cum = np.cumsum(cost)
    if cum[-1] <= budget_bytes:
        return np.array([0, n], dtype=np.int64)
    bounds = [0]
    k0 = 0
    while k0 < n:
        before = cum[k0 - 1] if k0 else 0
        k1 = int(np.searchsorted(cum, before + budget_bytes, side="right"))
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


class _Pool:
    """Grow-only device buffers by name; ``get`` returns a view of exactly ``n``."""

    def __init__(self, cuda):
        self._cuda = cuda
        self.buffers = {}

    def get(self, name, n, dtype):
        buf = self.buffers.get(name)
        if buf is None or buf.shape[0] < n:
            cap = max(_POOL_STEP, -(-n // _POOL_STEP) * _POOL_STEP)
            self.buffers[name] = buf = None  # drop the old one before allocating
            buf = self._cuda.device_array(cap, dtype=dtype)
            self.buffers[name] = buf
        return buf[:n]

    def nbytes(self):
        return sum(int(b.shape[0]) * b.dtype.itemsize for b in self.buffers.values())

    def clear(self):
        self.buffers.clear()


class CUDABackend:
    """Numba CUDA: one thread per segment on device ``cuda:{device_index}``.

    Parameters
    ----------
    trie : Trie
    scores : float64 numpy array
        The score array the lattice reads, as ``backend.select_backend``
        prepares it (uploaded as is).
    device_index : int
        CUDA device number.

    Attributes
    ----------
    profile : bool
        When true, ``encode_packed`` records ``last_timings`` (seconds, summed
        over chunks: ``host``, ``h2d``, ``lattice``, ``scatter``, ``d2h``,
        ``total``) with CUDA events; off by default (events cost syncs).
    """

    def __init__(self, trie: Trie, scores: np.ndarray, device_index: int = 0):
        from numba import cuda

        from .kernels import encode_segments, scatter_tokens

        self._cuda = cuda
        self._encode_kernel = encode_segments
        self._scatter_kernel = scatter_tokens
        index = int(device_index)
        try:
            n_dev = len(cuda.gpus)
        except Exception as e:
            raise DeviceError(f"cuda:{index} was asked for but CUDA devices cannot be listed ({e})") from None
        if not 0 <= index < n_dev:
            raise DeviceError(f"cuda:{index} was asked for but there are {n_dev} CUDA device(s)")
        self.index = index
        self.name = f"cuda:{index}"
        self.trie = trie
        self.scores = np.ascontiguousarray(scores, dtype=np.float64)
        self.profile = False
        self.last_timings = {}
        self._lock = threading.Lock()
        with self._device():
            self._stream = cuda.stream()
            self._base = cuda.to_device(np.ascontiguousarray(trie.base, dtype=np.int32))
            self._check = cuda.to_device(np.ascontiguousarray(trie.check, dtype=np.int32))
            self._node_id = cuda.to_device(np.ascontiguousarray(trie.node_id, dtype=np.int32))
            self._scores = cuda.to_device(self.scores)
        self._max_len = int(trie.max_len)
        self._scaled = {}  # alpha -> device array of alpha * scores
        self._pool = _Pool(cuda)

    # ---------------------------------------------------------------- device
    def _device(self):
        return self._cuda.gpus[self.index]

    def _scores_for(self, alpha):
        """Device scores and the ``alpha`` to launch with (see module notes).

        For a finite ``alpha >= 0`` the kernel gets ``alpha * scores`` (host
        products, the CPU's bit for bit; ``-inf`` cells, where no piece
        ends, stay ``-inf``) and ``alpha = 1.0``: ``x + 1.0 * y`` is exact
        whether or not NVVM fuses it.
        """
        if alpha < 0 or not math.isfinite(alpha):
            return self._scores, np.float64(alpha)
        key = float(alpha)
        dev = self._scaled.get(key)
        if dev is None:
            if len(self._scaled) >= _SCALED_CACHE:
                self._scaled.pop(next(iter(self._scaled)))
            with np.errstate(invalid="ignore"):  # 0 * -inf
                scaled = np.float64(alpha) * self.scores
            scaled[np.isneginf(self.scores)] = -np.inf
            dev = self._cuda.to_device(scaled)
            self._scaled[key] = dev
        return dev, np.float64(1.0)

    def pool_bytes(self) -> int:
        """Device bytes held by the buffer pool (the resident trie not included)."""
        return self._pool.nbytes()

    def release(self) -> None:
        """Free the pooled device buffers (the next call allocates again)."""
        with self._lock:
            self._pool.clear()
            self._scaled.clear()

    # ---------------------------------------------------------------- encode
    def encode_packed(self, data, doc_offsets, doc_keys, alpha, add_bos=False, add_eos=False):
        """Encode a packed batch; the contract of ``CPUBackend.encode_packed``."""
        from .cpu_fallback import find_segments

        t_start = time.perf_counter()
        data = np.ascontiguousarray(data, dtype=np.uint8)
        doc_offsets = np.ascontiguousarray(doc_offsets, dtype=np.int64)
        n_docs = len(doc_offsets) - 1
        seg_start, seg_end, seg_doc = find_segments(data, doc_offsets)
        n_seg = len(seg_start)
        counts = np.zeros(n_seg, dtype=np.int64)
        timings = dict.fromkeys(("host", "h2d", "lattice", "scatter", "d2h"), 0.0)
        if n_seg == 0:
            _, offsets = segment_layout(seg_doc, counts, n_docs, add_bos, add_eos)
            ids = np.empty(int(offsets[-1]), dtype=np.uint32)
            finish_specials(ids, offsets, add_bos, add_eos)
            if self.profile:
                timings["total"] = timings["host"] = time.perf_counter() - t_start
                self.last_timings = timings
            return ids, offsets

        seg_len = seg_end - seg_start
        seg_key = np.ascontiguousarray(np.asarray(doc_keys, dtype=np.uint64)[seg_doc])
        seg_pos = seg_start - doc_offsets[seg_doc]
        extra = int(add_bos) + int(add_eos)
        bounds = plan_chunks(seg_len, int(config.MAX_DEVICE_BYTES))
        n_chunks = len(bounds) - 1
        parts = []  # (position in ids, host array) when several chunks
        ids = None
        done = 0  # tokens of the segments before the current chunk
        with self._lock, self._device():
            scores_d, alpha_d = self._scores_for(alpha)
            for c in range(n_chunks):
                k0 = int(bounds[c])
                k1 = int(bounds[c + 1])
                dev = self._lattice_chunk(data, seg_start, seg_end, seg_key, seg_pos, seg_len, k0, k1,
                                          scores_d, alpha_d, counts, timings)
                # where this chunk's ids go: backend.segment_layout's dest, chunk by chunk
                cc = counts[k0:k1]
                dest = np.empty(k1 - k0, dtype=np.int64)
                dest[0] = 0
                np.cumsum(cc[:-1], out=dest[1:])
                dest += done + seg_doc[k0:k1] * extra + int(add_bos)
                pos0 = int(dest[0])
                span = int(dest[-1] + cc[-1]) - pos0
                done += int(cc.sum())
                if n_chunks == 1:
                    ids = np.empty(done + n_docs * extra, dtype=np.uint32)
                    host = ids[pos0:pos0 + span]
                else:
                    host = np.empty(span, dtype=np.uint32)
                    parts.append((pos0, host))
                self._scatter_chunk(dev, dest - pos0, host, timings)
        dest, offsets = segment_layout(seg_doc, counts, n_docs, add_bos, add_eos)
        if ids is None:
            ids = np.empty(int(offsets[-1]), dtype=np.uint32)
            for pos0, host in parts:
                ids[pos0:pos0 + len(host)] = host
        finish_specials(ids, offsets, add_bos, add_eos)
        if self.profile:
            timings["total"] = time.perf_counter() - t_start
            timings["host"] = timings["total"] - timings["h2d"] - timings["lattice"] \
                - timings["scatter"] - timings["d2h"]
            self.last_timings = timings
        return ids, offsets

    def _launch(self, n_threads):
        tpb = int(config.THREADS_PER_BLOCK)
        blocks = max(1, min(-(-n_threads // tpb), int(config.CUDA_MAX_BLOCKS)))
        return blocks, tpb

    def _event(self):
        try:
            return self._cuda.event(timing=True)
        except TypeError:  # the simulator's events take no arguments (and time nothing)
            return self._cuda.event()

    def _timer(self):
        if not self.profile:
            return None
        ev = self._event()
        ev.record(self._stream)
        return ev

    def _elapsed(self, ev0, timings, key):
        if ev0 is None:
            return
        ev1 = self._event()
        ev1.record(self._stream)
        ev1.synchronize()
        timings[key] += max(0.0, ev0.elapsed_time(ev1)) / 1e3

    def _lattice_chunk(self, data, seg_start, seg_end, seg_key, seg_pos, seg_len, k0, k1,
                       scores_d, alpha_d, counts, timings):
        """Upload segments ``k0:k1`` (rebased to their first byte), run the lattice, fetch counts.

        Returns the device ``out``, ``seg_start`` and ``counts`` of the chunk.
        """
        cuda = self._cuda
        pool = self._pool
        st = self._stream
        m = k1 - k0
        a0 = int(seg_start[k0])
        a1 = int(seg_end[k1 - 1])
        nb = a1 - a0
        h_start = seg_start[k0:k1] - a0
        h_end = seg_end[k0:k1] - a0
        if config.CUDA_SORT_SEGMENTS:
            h_order = segment_order(seg_len[k0:k1])
        else:
            h_order = np.arange(m, dtype=np.int64)
        ev = self._timer()
        d_data = pool.get("data", nb, np.uint8)
        d_data.copy_to_device(data[a0:a1], stream=st)
        d_start = pool.get("seg_start", m, np.int64)
        d_start.copy_to_device(h_start, stream=st)
        d_end = pool.get("seg_end", m, np.int64)
        d_end.copy_to_device(h_end, stream=st)
        d_key = pool.get("seg_key", m, np.uint64)
        d_key.copy_to_device(seg_key[k0:k1], stream=st)
        d_pos = pool.get("seg_pos", m, np.int64)
        d_pos.copy_to_device(np.ascontiguousarray(seg_pos[k0:k1]), stream=st)
        d_order = pool.get("order", m, np.int64)
        d_order.copy_to_device(h_order, stream=st)
        self._elapsed(ev, timings, "h2d")
        best = pool.get("best", nb + m, np.float64)
        back_len = pool.get("back_len", nb + m, np.int32)
        back_id = pool.get("back_id", nb + m, np.int32)
        out = pool.get("out", nb, np.uint32)
        d_counts = pool.get("counts", m, np.int64)
        ev = self._timer()
        blocks, tpb = self._launch(m)
        self._encode_kernel[blocks, tpb, st](
            d_data, d_start, d_end, d_key, d_pos, d_order,
            self._base, self._check, self._node_id, scores_d, self._max_len, alpha_d,
            best, back_len, back_id, out, d_counts)
        self._elapsed(ev, timings, "lattice")
        ev = self._timer()
        d_counts.copy_to_host(counts[k0:k1], stream=st)
        st.synchronize()
        self._elapsed(ev, timings, "d2h")
        return out, d_start, d_counts

    def _scatter_chunk(self, dev, dest, host, timings):
        """Compact the chunk's ids (left in ``out``) to ``dest`` and copy them to ``host``."""
        from .kernels.tokenize import SCATTER_LANES

        out, d_start, d_counts = dev
        pool = self._pool
        st = self._stream
        m = len(dest)
        span = len(host)
        ev = self._timer()
        d_dest = pool.get("dest", m, np.int64)
        d_dest.copy_to_device(dest, stream=st)
        self._elapsed(ev, timings, "h2d")
        d_ids = pool.get("ids", max(span, 1), np.uint32)
        ev = self._timer()
        blocks, tpb = self._launch(m * SCATTER_LANES)
        self._scatter_kernel[blocks, tpb, st](out, d_start, d_counts, d_dest, d_ids)
        self._elapsed(ev, timings, "scatter")
        ev = self._timer()
        if span:
            d_ids[:span].copy_to_host(host, stream=st)
        st.synchronize()
        self._elapsed(ev, timings, "d2h")

    def __repr__(self) -> str:
        return f"CUDABackend({self.name!r})"
