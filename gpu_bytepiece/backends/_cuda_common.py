"""What the CUDA backend's two paths share: the device, its resident model, buffers, launches.

``backends.cuda`` (host input, ``encode_packed``) and
``backends.cuda_device`` (device input, ``encode_device``) run the same
lattice kernels on the same resources, held here by ``CUDABase``:

- the trie (``cells``, ``node_id``) and the scores are
  uploaded once and stay on the device;
- device buffers (text, segment arrays, scratch, ids) come from a grow-only
  pool reused by every call, and so do the pinned host staging buffers;
- two pipeline slots, each a stream (plus one for long segments);
- the launch of the two lattice kernels: segments longer than
  ``config.CUDA_LONG_SEGMENT_BYTES`` run on a thread block each
  (``kernels.encode_long_segments``, on a second stream, next to the
  one-thread-per-segment ``kernels.encode_segments``).

Exactness: the best path (``alpha < 0``) adds float64 scores, which is the
same IEEE arithmetic on both devices. For sampling, NVVM contracts
``bs + alpha * score`` into one fused multiply-add (numba-cuda offers no
switch for that, even without fastmath), which could differ from the CPU's
two roundings; the backend therefore uploads what ``layout.sampling_scores``
computes on the host in numpy (the CPU's numbers, bit for bit): weights for
the lattice's linear form (no multiply-add in it), or for a huge ``alpha``
``alpha * scores`` run with ``alpha = 1.0``, where the fused and unfused
forms agree exactly. The
long-segment kernel relaxes the same candidates in the same order with the
same arithmetic, for both modes.
"""

from __future__ import annotations

import threading

import numpy as np

from .. import config
from ..device import DeviceError
from ..trie import Trie
from .layout import sampling_scores

__all__ = ["CUDABase", "BYTES_PER_BYTE", "BYTES_PER_SEGMENT"]

#: Device bytes per input byte: text 1, scratch 8 + 8 (``best`` float64,
#: ``back`` int64 trie cell and length), ``out`` 4, ids 4.
BYTES_PER_BYTE = 25
#: Device bytes per segment: 7 int64 arrays, one more scratch cell (16),
#: up to two special ids (8).
BYTES_PER_SEGMENT = 80
#: Pool buffers grow in steps of this many elements.
_POOL_STEP = 1 << 16
#: Sampling temperatures whose pre-scaled scores stay on the device.
_SCALED_CACHE = 4


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


class CUDABase:
    """The resources of one CUDA device and the launch of the lattice kernels.

    Built by ``backends.cuda.CUDABackend`` (its parameters).
    """

    def __init__(self, trie: Trie, scores: np.ndarray, device_index: int = 0):
        from numba import cuda

        from .. import kernels

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
            self._scores = cuda.to_device(self.scores)
        self._max_len = int(trie.max_len)
        self._scaled = {}  # alpha -> (device scores, alpha to launch with)
        self._pool = _Pool(lambda n, dt: cuda.device_array(n, dtype=dt))
        self._pinned = _Pool(lambda n, dt: cuda.pinned_array(n, dtype=dt))

    # ---------------------------------------------------------------- device
    def _device(self):
        return self._cuda.gpus[self.index]

    def _scores_for(self, alpha):
        """Device scores and the ``alpha`` to launch with (``layout.sampling_scores``).

        For ``alpha >= 0`` the kernel gets the host's numpy numbers, the CPU
        backend's bit for bit: weights ``exp(alpha * scores)`` and
        ``LINEAR``, or (huge ``alpha``) ``alpha * scores`` and ``alpha =
        1.0``, where ``x + 1.0 * y`` is exact whether or not NVVM fuses it.
        Kept per ``alpha`` (a few).
        """
        if alpha < 0:
            return self._scores, np.float64(alpha)
        key = float(alpha)
        got = self._scaled.get(key)
        if got is None:
            if len(self._scaled) >= _SCALED_CACHE:
                self._scaled.pop(next(iter(self._scaled)))
            scaled, run_alpha = sampling_scores(self.scores, alpha)
            got = (self._cuda.to_device(scaled), run_alpha)
            self._scaled[key] = got
        return got

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
        from ..kernels.long_segments import long_layout

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
            from ..kernels import encode_long_segments

            _, threads, (rows, stride, ring, win, nbytes) = plan
            if aux is not st:
                ev = self._event()
                ev.record(st)
                ev.wait(aux)
            blocks = max(1, min(n_long, int(config.CUDA_MAX_BLOCKS)))
            encode_long_segments[blocks, threads, aux, nbytes](
                d_data, d_start, d_end, d_key, d_pos, d_long,
                self._cells, self._node_id, scores_d, self._max_len, alpha_d,
                rows, stride, ring, win, back, out, d_counts)
        if n_short:
            blocks, tpb = self._launch(n_short)
            self._encode_kernel[blocks, tpb, st](
                d_data, d_start, d_end, d_key, d_pos, d_order,
                self._cells, self._node_id, scores_d, self._max_len, alpha_d,
                best, back, out, d_counts)
        if n_long and aux is not st:
            ev = self._event()
            ev.record(aux)
            ev.wait(st)

    def _grid(self, n):
        """``(blocks, threads)`` of a grid-stride kernel over ``n`` items (at least one block)."""
        return self._launch(max(1, n))

    def __repr__(self) -> str:
        return f"CUDABackend({self.name!r})"
