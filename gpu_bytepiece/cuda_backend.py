"""CUDA backend: the shared lattice on a GPU (Numba CUDA), same contract as the CPU.

``CUDABackend.encode_packed`` takes a packed host batch and returns exactly
what ``backend.CPUBackend.encode_packed`` returns. Segmentation
(``cpu_fallback.find_segments``) and the output layout
(``backend.segment_layout`` / ``backend.finish_specials``) are the CPU's,
on the host; the GPU runs the lattice and ``kernels.scatter_tokens``.
``CUDABackend.encode_device`` (and the module function ``encode_device``)
take text that is already on the GPU and return device arrays; there the
segmentation and layout run on the device too (``kernels.layout``).

Per backend (one per device):

- the trie (``cells``, ``node_id``, ``node_len``) and the scores are
  uploaded once and stay on the device;
- device buffers (text, segment arrays, scratch, ids) come from a grow-only
  pool reused by every call, and so do the pinned host staging buffers;
- a host batch runs in chunks of whole segments: of at most
  ``config.CUDA_PIPELINE_BYTES`` text bytes, and within
  ``config.MAX_DEVICE_BYTES`` of device memory per chunk (half of it when
  two chunks are in flight; one segment larger than that runs alone). The
  chunks alternate between two streams with their own buffers: chunk
  ``k + 1`` is staged into pinned memory and uploaded while chunk ``k``'s
  kernels run, and chunk ``k``'s ids come back while chunk ``k + 1``'s
  run (double buffering; under the simulator all of this runs serially);
- segments longer than ``config.CUDA_LONG_SEGMENT_BYTES`` run on a thread
  block each (``kernels.encode_long_segments``, on a second stream, next to
  the one-thread-per-segment kernel); the others go to threads longest first
  (``config.CUDA_SORT_SEGMENTS``).

Exactness: the best path (``alpha < 0``) adds float64 scores, which is the
same IEEE arithmetic on both devices. For sampling, NVVM contracts
``bs + alpha * score`` into one fused multiply-add (numba-cuda offers no
switch for that, even without fastmath), which could differ from the CPU's
two roundings; the backend therefore uploads ``alpha * scores`` computed on
the host in numpy (the CPU's products, bit for bit) and runs the lattice with
``alpha = 1.0``, where the fused and unfused forms agree exactly. The
long-segment kernel relaxes the same candidates in the same order with the
same arithmetic, for both modes.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from . import config
from .backend import finish_specials, segment_layout
from .device import DeviceError
from .core.lattice import mix64
from .trie import Trie

__all__ = ["CUDABackend", "encode_device", "plan_chunks", "segment_order", "as_device_array"]

#: Device bytes per input byte: text 1, scratch 8 + 4 (``best`` float64,
#: ``back`` int32 trie cell), ``out`` 4, ids 4.
BYTES_PER_BYTE = 21
#: Device bytes per segment: 7 int64 arrays, one more scratch cell (12),
#: up to two special ids (8).
BYTES_PER_SEGMENT = 76
#: Pool buffers grow in steps of this many elements.
_POOL_STEP = 1 << 16
#: Sampling temperatures whose pre-scaled scores stay on the device.
_SCALED_CACHE = 4


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


def as_device_array(obj, dtype, what="array"):
    """A 1-d C-contiguous Numba device array viewing ``obj`` (no copy).

    ``obj`` is a Numba device array or anything with
    ``__cuda_array_interface__`` (CuPy, PyTorch, ...) of exactly ``dtype``.
    """
    from numba import cuda

    if getattr(obj, "__cuda_ndarray__", False):
        arr = obj
    elif hasattr(obj, "__cuda_array_interface__") and hasattr(cuda, "as_cuda_array"):
        arr = cuda.as_cuda_array(obj)
    else:
        raise TypeError(f"{what} must be a CUDA device array (Numba device array, CuPy, or anything with "
                        f"__cuda_array_interface__), got {type(obj).__name__}; host data goes through "
                        "Tokenizer.encode_to_numpy")
    if len(arr.shape) != 1 or np.dtype(arr.dtype) != np.dtype(dtype):
        raise TypeError(f"{what} must be a 1-d {np.dtype(dtype).name} device array, "
                        f"got shape {tuple(arr.shape)} and dtype {arr.dtype}")
    if not arr.is_c_contiguous():
        raise TypeError(f"{what} must be contiguous")
    return arr


class _Pool:
    """Grow-only buffers by name; ``get`` returns a view of exactly ``n``.

    ``alloc(n, dtype)`` makes a buffer: ``cuda.device_array`` for device
    memory, ``cuda.pinned_array`` for pinned host staging.
    """

    def __init__(self, alloc):
        self._alloc = alloc
        self.buffers = {}

    def get(self, name, n, dtype):
        buf = self.buffers.get(name)
        if buf is None or buf.shape[0] < n or buf.dtype != np.dtype(dtype):
            cap = max(_POOL_STEP, -(-n // _POOL_STEP) * _POOL_STEP)
            self.buffers[name] = buf = None  # drop the old one before allocating
            buf = self._alloc(cap, dtype)
            self.buffers[name] = buf
        return buf[:n]

    def nbytes(self):
        return sum(int(b.shape[0]) * b.dtype.itemsize for b in self.buffers.values())

    def clear(self):
        self.buffers.clear()


class _Slot:
    """One of the two pipeline stages: a stream (plus one for long segments) and its buffers."""

    def __init__(self, cuda, index):
        self.index = index
        self.stream = cuda.stream()
        self.aux = cuda.stream()
        self.pending = None  # (pos0, span) of ids on their way into this slot's pinned buffer
        self.chunk = None  # the chunk enqueued and not yet finished


class CUDABackend:
    """Numba CUDA: the lattice on device ``cuda:{device_index}``.

    One thread per segment, one thread block per long segment.

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
        ``total``) with CUDA events; off by default (events cost syncs, and
        profiling runs the chunks and the two lattice kernels one after
        another, without overlap).
    """

    def __init__(self, trie: Trie, scores: np.ndarray, device_index: int = 0):
        from numba import cuda

        from . import kernels

        self._cuda = cuda
        self._k = kernels
        self._encode_kernel = kernels.encode_segments
        self._scatter_kernel = kernels.scatter_tokens
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
            self._slots = (_Slot(cuda, 0), _Slot(cuda, 1))
            self._stream = self._slots[0].stream
            self._cells = cuda.to_device(np.ascontiguousarray(trie.cells, dtype=np.int64))
            self._node_id = cuda.to_device(np.ascontiguousarray(trie.node_id, dtype=np.int32))
            self._node_len = cuda.to_device(np.ascontiguousarray(trie.node_len, dtype=np.int32))
            self._scores = cuda.to_device(self.scores)
        self._max_len = int(trie.max_len)
        self._scaled = {}  # alpha -> device array of alpha * scores
        self._pool = _Pool(lambda n, dt: cuda.device_array(n, dtype=dt))
        self._pinned = _Pool(lambda n, dt: cuda.pinned_array(n, dtype=dt))

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

    def pinned_bytes(self) -> int:
        """Pinned host bytes held for staging transfers."""
        return self._pinned.nbytes()

    def release(self) -> None:
        """Free the pooled device and pinned buffers (the next call allocates again)."""
        with self._lock:
            self._pool.clear()
            self._pinned.clear()
            self._scaled.clear()

    def _long_plan(self):
        """``(threshold, threads, layout)`` of the long-segment path, or ``None`` when it is off."""
        from .kernels.long_segments import long_layout

        thr = config.CUDA_LONG_SEGMENT_BYTES
        if thr is None:
            return None
        threads = int(config.CUDA_LONG_THREADS)
        layout = long_layout(self._max_len, threads, int(config.CUDA_LONG_SHARED_BYTES))
        if layout[0] <= 0:
            return None
        return int(thr), threads, layout

    # ------------------------------------------------------------ launching
    def _launch(self, n_threads):
        tpb = int(config.THREADS_PER_BLOCK)
        blocks = max(1, min(-(-n_threads // tpb), int(config.CUDA_MAX_BLOCKS)))
        return blocks, tpb

    def _event(self):
        try:
            return self._cuda.event(timing=True)
        except TypeError:  # the simulator's events take no arguments (and time nothing)
            return self._cuda.event()

    def _timer(self, st):
        if not self.profile:
            return None
        ev = self._event()
        ev.record(st)
        return ev

    def _elapsed(self, ev0, st, timings, key):
        if ev0 is None:
            return
        ev1 = self._event()
        ev1.record(st)
        ev1.synchronize()
        timings[key] += max(0.0, ev0.elapsed_time(ev1)) / 1e3

    def _run_lattice(self, d_data, d_start, d_end, d_key, d_pos, d_order, d_long, scores_d, alpha_d,
                     best, back, out, d_counts, st, aux, plan):
        """Launch the long-segment kernel (on ``aux``) and the one-thread kernel (on ``st``).

        ``st`` waits for both before anything enqueued after this call.
        """
        n_long = d_long.shape[0]
        n_short = d_order.shape[0]
        if n_long:
            from .kernels import encode_long_segments

            _, threads, (rows, stride, ring, win, nbytes) = plan
            if aux is not st:
                ev = self._event()
                ev.record(st)
                ev.wait(aux)
            blocks = max(1, min(n_long, int(config.CUDA_MAX_BLOCKS)))
            encode_long_segments[blocks, threads, aux, nbytes](
                d_data, d_start, d_end, d_key, d_pos, d_long,
                self._cells, self._node_id, self._node_len, scores_d, self._max_len, alpha_d,
                rows, stride, ring, win, back, out, d_counts)
        if n_short:
            blocks, tpb = self._launch(n_short)
            self._encode_kernel[blocks, tpb, st](
                d_data, d_start, d_end, d_key, d_pos, d_order,
                self._cells, self._node_id, self._node_len, scores_d, self._max_len, alpha_d,
                best, back, out, d_counts)
        if n_long and aux is not st:
            ev = self._event()
            ev.record(aux)
            ev.wait(st)

    # ----------------------------------------------------------- host input
    def encode_packed(self, data, doc_offsets, doc_keys, alpha, add_bos=False, add_eos=False,
                      segments=None):
        """Encode a packed host batch; the contract of ``CPUBackend.encode_packed``."""
        from .cpu_fallback import find_segments

        t_start = time.perf_counter()
        data = np.ascontiguousarray(data, dtype=np.uint8)
        doc_offsets = np.ascontiguousarray(doc_offsets, dtype=np.int64)
        n_docs = len(doc_offsets) - 1
        if segments is None:
            segments = find_segments(data, doc_offsets)
        seg_start, seg_end, seg_doc = segments
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
        finish_specials(ids, offsets, add_bos, add_eos)
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
        dev = {"best": (nb + m, np.float64), "back": (nb + m, np.int32), "out": (nb, np.uint32)}
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
        back = pool.get(f"back{i}", nb + m, np.int32)
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
        # where this chunk's ids go: backend.segment_layout's dest, chunk by chunk
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

    # --------------------------------------------------------- device input
    def _grid(self, n):
        return self._launch(max(1, n))

    def _read(self, arr, i, st):
        """``int(arr[i])`` (waits for ``st``)."""
        h = arr[i:i + 1].copy_to_host(stream=st)
        st.synchronize()
        return int(h[0])

    def _tile_offsets(self, x, name, st):
        """Tile size and exclusive tile offsets (``n_tiles + 1`` cells, the last the total) of ``x``."""
        from .kernels import layout as kl

        n = x.shape[0]
        tpb = min(int(config.THREADS_PER_BLOCK), kl.MAX_THREADS)
        tile = max(tpb * 8, -(-n // int(config.CUDA_SCAN_MAX_TILES)))
        n_tiles = -(-n // tile)
        # always the largest size, so that the buffer is never replaced while a scan may still read it
        sums = self._pool.get(name, max(n_tiles, int(config.CUDA_SCAN_MAX_TILES)) + 1, np.int64)[:n_tiles + 1]
        if n_tiles:
            blocks = min(n_tiles, int(config.CUDA_MAX_BLOCKS))
            kl.tile_sums[blocks, tpb, st](x, tile, sums)
        kl.scan_in_place[1, tpb, st](sums, n_tiles)
        return tile, sums, n_tiles, tpb

    def _scan(self, x, out, name, st):
        """``out[i] = x[:i].sum()`` for ``i <= len(x)`` on the device."""
        from .kernels import layout as kl

        tile, sums, n_tiles, tpb = self._tile_offsets(x, name, st)
        blocks = max(1, min(n_tiles, int(config.CUDA_MAX_BLOCKS)))
        kl.scan_tiles[blocks, tpb, st](x, tile, sums, out)

    def encode_device(self, data, doc_offsets, alpha=-1.0, add_bos=False, add_eos=False, *,
                      doc_keys=None, stream_key=None, first_doc=0):
        """Encode text that is already on the GPU; results stay there.

        Parameters
        ----------
        data : uint8 device array
            NFC-normalized UTF-8 (the caller's responsibility: no
            normalization happens on the device), any object with
            ``__cuda_array_interface__`` or a Numba device array.
        doc_offsets : int64 device array, ``n_docs + 1``
            Document ``d`` is ``data[doc_offsets[d]:doc_offsets[d + 1]]``;
            non-decreasing, within ``data`` (``doc_offsets[0]`` may be > 0).
        alpha : float
            ``< 0``: best path; ``>= 0``: sample.
        add_bos, add_eos : bool
        doc_keys : uint64 array, optional
            Sampling key per document (host or device).
        stream_key : int, optional
            Instead of ``doc_keys``: keys ``lattice.document_keys(stream_key,
            first_doc + d)``, computed on the device.

        Returns
        -------
        ids : uint32 Numba device array
        offsets : int64 Numba device array, ``n_docs + 1``
            As ``encode_packed`` returns them on the host.

        Only scalars cross to the host (document span, segment and long
        segment counts, chunk cuts when chunked, the id total), each a sync.
        """
        from .kernels import layout as kl

        cuda = self._cuda
        d_data = as_device_array(data, np.uint8, "data")
        d_off = as_device_array(doc_offsets, np.int64, "doc_offsets")
        n_docs = d_off.shape[0] - 1
        if n_docs < 0:
            raise ValueError("doc_offsets must have at least one element")
        extra = int(add_bos) + int(add_eos)
        alpha = float(alpha)
        use_keys = alpha >= 0
        if use_keys and doc_keys is None and stream_key is None:
            raise ValueError("sampling (alpha >= 0) needs doc_keys or stream_key")
        with self._lock, self._device():
            st = self._stream
            pool = self._pool
            if n_docs == 0:
                return cuda.device_array(0, dtype=np.uint32), cuda.to_device(np.zeros(1, dtype=np.int64))
            a0 = self._read(d_off, 0, st)
            a1 = self._read(d_off, n_docs, st)
            if not 0 <= a0 <= a1 <= d_data.shape[0]:
                raise ValueError(f"doc_offsets span [{a0}, {a1}) is not within data (length {d_data.shape[0]})")
            n = a1 - a0
            view = d_data[a0:a1]
            # sampling keys, per document
            if use_keys and doc_keys is not None:
                if getattr(doc_keys, "__cuda_ndarray__", False) or hasattr(doc_keys, "__cuda_array_interface__"):
                    d_keys = as_device_array(doc_keys, np.uint64, "doc_keys")
                else:
                    d_keys = pool.get("dv_keys", n_docs, np.uint64)
                    d_keys.copy_to_device(np.ascontiguousarray(doc_keys, dtype=np.uint64), stream=st)
                if d_keys.shape[0] < n_docs:
                    raise ValueError(f"doc_keys has {d_keys.shape[0]} keys for {n_docs} documents")
            else:
                d_keys = pool.get("dv_keys", n_docs, np.uint64)
                if use_keys:
                    k0 = np.uint64(mix64(np.array([int(stream_key) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0])
                    kl.document_keys[*self._grid(n_docs), st](k0, np.int64(first_doc), d_keys)
            # segmentation (twin of cpu_fallback.find_segments)
            n_seg = 0
            if n:
                flags = pool.get("dv_flags", n, np.uint8)
                kl.newline_ends[*self._grid(n), st](view, flags)
                kl.document_ends[*self._grid(n_docs), st](d_off, flags)
                tile, sums, n_tiles, tpb = self._tile_offsets(flags, "dv_sums", st)
                n_seg = self._read(sums, n_tiles, st)
            seg_end = pool.get("dv_seg_end", n_seg, np.int64)
            seg_start = pool.get("dv_seg_start", n_seg, np.int64)
            seg_doc = pool.get("dv_seg_doc", n_seg, np.int64)
            seg_key = pool.get("dv_seg_key", n_seg, np.uint64)
            seg_pos = pool.get("dv_seg_pos", n_seg, np.int64)
            counts = pool.get("dv_counts", n_seg, np.int64)
            out = pool.get("dv_out", n, np.uint32)
            if n_seg:
                blocks = max(1, min(n_tiles, int(config.CUDA_MAX_BLOCKS)))
                kl.compact_tiles[blocks, tpb, st](flags, tile, sums, 1, seg_end)
                kl.segment_starts[*self._grid(n_seg), st](seg_end, 0, seg_start)
                kl.segment_docs[*self._grid(n_seg), st](seg_start, d_off, d_keys, int(use_keys),
                                                       seg_doc, seg_key, seg_pos)
                scores_d, alpha_d = self._scores_for(alpha)
                chunks = self._device_chunks(seg_end, n, n_seg, st)
                # chunk buffers at their largest size up front: never replaced under a running kernel
                m_max = max(k1 - k0 for k0, k1, _, _ in chunks)
                nb_max = max(c1 - c0 for _, _, c0, c1 in chunks)
                for name, size, dt in (("dv_c_start", m_max, np.int64), ("dv_c_end", m_max, np.int64),
                                       ("dv_lflags", m_max, np.uint8), ("dv_order", m_max, np.int64),
                                       ("best0", nb_max + m_max, np.float64),
                                       ("back0", nb_max + m_max, np.int32)):
                    pool.get(name, size, dt)
                for k0, k1, c0, c1 in chunks:
                    self._device_chunk(view, seg_start, seg_end, seg_key, seg_pos, k0, k1, c0, c1,
                                       n_seg, out, counts, scores_d, alpha_d, st)
            # layout (twin of backend.segment_layout / finish_specials)
            cum = pool.get("dv_cum", n_seg + 1, np.int64)
            self._scan(counts, cum, "dv_sums", st)
            tokens = pool.get("dv_tokens", n_docs, np.int64)
            kl.document_tokens[*self._grid(n_docs), st](d_off, seg_end, cum, extra, tokens)
            offsets = cuda.device_array(n_docs + 1, dtype=np.int64)
            self._scan(tokens, offsets, "dv_sums", st)
            total = self._read(offsets, n_docs, st)
            ids = cuda.device_array(total, dtype=np.uint32)
            if n_seg:
                dest = pool.get("dv_dest", n_seg, np.int64)
                kl.segment_dest[*self._grid(n_seg), st](cum, seg_doc, extra, int(add_bos), dest)
                blocks, tpb = self._launch(n_seg * self._k.tokenize.SCATTER_LANES)
                self._scatter_kernel[blocks, tpb, st](out, seg_start, counts, dest, ids)
            if extra:
                kl.put_specials[*self._grid(n_docs), st](offsets, int(add_bos), int(add_eos), ids)
            st.synchronize()
        return ids, offsets

    def _device_chunks(self, seg_end, n, n_seg, st):
        """``(k0, k1, c0, c1)``: segments and bytes of each chunk of device input."""
        from .kernels import layout as kl

        if n * BYTES_PER_BYTE + n_seg * BYTES_PER_SEGMENT <= int(config.MAX_DEVICE_BYTES):
            return [(0, n_seg, 0, n)]
        step = max(1, int(config.MAX_DEVICE_BYTES) // (BYTES_PER_BYTE + BYTES_PER_SEGMENT))
        n_cuts = -(-n // step)
        cuts = self._pool.get("dv_cuts", n_cuts, np.int64)
        byte_cuts = self._pool.get("dv_byte_cuts", n_cuts, np.int64)
        kl.chunk_cuts[*self._grid(n_cuts), st](seg_end, step, cuts, byte_cuts)
        h_cuts = cuts.copy_to_host(stream=st)
        h_bytes = byte_cuts.copy_to_host(stream=st)
        st.synchronize()
        chunks = []
        k0 = c0 = 0
        for k1, c1 in zip(h_cuts.tolist(), h_bytes.tolist()):
            if k1 > k0:
                chunks.append((k0, k1, c0, c1))
                k0, c0 = k1, c1
        return chunks

    def _device_chunk(self, view, seg_start, seg_end, seg_key, seg_pos, k0, k1, c0, c1,
                      n_seg, out, counts, scores_d, alpha_d, st):
        """The lattice of segments ``k0:k1`` (bytes ``c0:c1`` of ``view``) of device input."""
        from .kernels import layout as kl

        pool = self._pool
        m = k1 - k0
        nb = c1 - c0
        if k0 == 0 and k1 == n_seg and c0 == 0:
            c_start, c_end = seg_start, seg_end
        else:
            c_start = pool.get("dv_c_start", m, np.int64)
            c_end = pool.get("dv_c_end", m, np.int64)
            kl.rebase[*self._grid(m), st](seg_start, k0, c0, c_start)
            kl.rebase[*self._grid(m), st](seg_end, k0, c0, c_end)
        plan = self._long_plan()
        # long segments first, then the others in text order (no length sort on the device)
        thr = plan[0] if plan is not None else np.iinfo(np.int64).max
        lflags = pool.get("dv_lflags", m, np.uint8)
        kl.long_flags[*self._grid(m), st](c_start, c_end, thr, lflags)
        tile, sums, n_tiles, tpb = self._tile_offsets(lflags, "dv_lsums", st)
        order = pool.get("dv_order", m, np.int64)
        blocks = max(1, min(n_tiles, int(config.CUDA_MAX_BLOCKS)))
        kl.partition_tiles[blocks, tpb, st](lflags, tile, sums, order)
        n_long = self._read(sums, n_tiles, st)
        best = pool.get("best0", nb + m, np.float64)
        back = pool.get("back0", nb + m, np.int32)
        self._run_lattice(view[c0:c1], c_start, c_end, seg_key[k0:k1], seg_pos[k0:k1], order[n_long:],
                          order[:n_long], scores_d, alpha_d, best, back, out[c0:c1],
                          counts[k0:k1], st, self._slots[0].aux, plan)

    def __repr__(self) -> str:
        return f"CUDABackend({self.name!r})"


def encode_device(tokenizer, data, offsets, *, add_bos: bool = False, add_eos: bool = False,
                  alpha: float = -1, seed: int | None = None, output: str = "auto"):
    """Encode documents that are already on the GPU into ids on the GPU.

    The device twin of ``Tokenizer.encode_to_numpy``: the same ids and
    offsets (sampling included: same seed, same call sequence), with no
    round trip of the text or the ids through the host.

    Parameters
    ----------
    tokenizer : Tokenizer
        On a CUDA device (``device='cuda'`` or ``'cuda:N'``).
    data : uint8 device array
        UTF-8 bytes of the documents, **already NFC-normalized** (the host
        path normalizes; the device path does not). A Numba device array or
        anything with ``__cuda_array_interface__`` (CuPy, PyTorch, ...).
    offsets : int64 device array, ``n_docs + 1``
        Document ``i`` is ``data[offsets[i]:offsets[i + 1]]``.
    add_bos, add_eos, alpha, seed
        As ``Tokenizer.encode_to_numpy``.
    output : {'auto', 'numba', 'cupy'}
        Kind of the returned arrays: ``auto`` gives CuPy arrays when
        ``data`` is a CuPy array, Numba device arrays otherwise (both views
        of the same device memory, no copy).

    Returns
    -------
    ids : uint32 device array
    offsets : int64 device array, ``n_docs + 1``
    """
    from .device import DeviceError as _DeviceError

    backend = tokenizer._backend
    if not isinstance(backend, CUDABackend):
        raise _DeviceError(f"encode_device needs a Tokenizer on a CUDA device (device='cuda'); "
                           f"this one runs on {tokenizer.device!r}")
    if output not in ("auto", "numba", "cupy"):
        raise ValueError(f"output must be 'auto', 'numba' or 'cupy', got {output!r}")
    tokenizer._start_call(alpha, seed)
    stream_key = tokenizer._stream if alpha >= 0 else None
    ids, offs = backend.encode_device(data, offsets, float(alpha), add_bos, add_eos, stream_key=stream_key)
    if output == "cupy" or (output == "auto" and type(data).__module__.split(".")[0] == "cupy"):
        import cupy

        return cupy.asarray(ids), cupy.asarray(offs)
    return ids, offs
