"""The CPU backend: the lattice compiled with ``numba.njit``, ``prange`` over chunks of segments.

One-chunk work outside the backend's threads (a batch under
``config.CPU_MIN_CHUNK_BYTES``: a short text) runs the same drivers compiled
ahead of time (:mod:`gpu_bytepiece.aot`) when the install has
them, and then never imports Numba; the rest imports Numba on first use.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from contextlib import contextmanager

import numpy as np

from .. import aot, config, jit_cache
from ..cpu_fallback import chunk_bounds
from ..text import _as_documents, iter_packed
from ..trie import Trie
from .layout import put_specials, sampling_scores, segment_layout, segment_table

__all__ = ["CPUBackend", "concurrent_numba_ok", "numba_thread_count", "numba_threads", "reuse_scratch",
           "set_numba_threads"]

_CONCURRENT_OK = None
_JIT = None


def _jit():
    """The Numba drivers (``cpu_fallback.tokenize``), imported on first use."""
    global _JIT
    if _JIT is None:
        jit_cache.announce("the tokenizer", "cpu_fallback/tokenize")
        from ..cpu_fallback import tokenize

        _JIT = tokenize
    return _JIT


def _numba():
    import numba

    return numba


class CPUBackend:
    """Numba CPU: ``prange`` over chunks of segments.

    Parameters
    ----------
    trie : Trie
    node_score : float64 numpy array
        The lattice's scores per trie cell (``Trie.node_scores``).
    """

    name = "cpu"

    def __init__(self, trie: Trie, node_score: np.ndarray):
        self.trie = trie
        self.node_score = node_score
        self._scaled = {}  # alpha -> (scores, alpha) to run the lattice with
        self._aot = aot.load()

    @property
    def ahead_of_time(self) -> bool:
        """Whether one-chunk work outside threads runs ``gpu_bytepiece.aot``'s drivers."""
        return self._aot is not None

    def _scores_for(self, alpha):
        """``layout.sampling_scores`` of this model, kept for the last few ``alpha``."""
        if alpha < 0:
            return self.node_score, np.float64(alpha)
        cache = self._scaled  # threads share it: replaced whole, never emptied in place
        got = cache.get(float(alpha))
        if got is None:
            got = sampling_scores(self.node_score, alpha)
            cache = dict(cache) if len(cache) < 4 else {}
            cache[float(alpha)] = got
            self._scaled = cache
        return got

    def encode_packed(self, data, doc_offsets, alpha, add_bos=False, add_eos=False, *,
                      stream_key=None, first_doc=0):
        """Encode a packed batch: the backends' one contract.

        Parameters
        ----------
        data : uint8 array
            NFC UTF-8 of all documents, joined.
        doc_offsets : int64 array, ``n_docs + 1``
            Document ``d`` is ``data[doc_offsets[d]:doc_offsets[d + 1]]``.
        alpha : float
            ``< 0``: best path; ``>= 0``: sample.
        add_bos, add_eos : bool
        stream_key : int, optional
            Sampling: the stream (seed and call number) the document keys
            come from (``core.rng.document_keys``); ``None`` for the best path.
        first_doc : int
            Index of document 0 in the stream.

        Returns
        -------
        ids : uint32 array
        offsets : int64 array, ``n_docs + 1``
        """
        return self._encode(data, doc_offsets, alpha, add_bos, add_eos, stream_key, first_doc, use_aot=True)

    def _encode(self, data, doc_offsets, alpha, add_bos, add_eos, stream_key, first_doc, use_aot):
        """``encode_packed``; ``use_aot``: one-chunk work may run ``gpu_bytepiece.aot``'s
        drivers (one thread; the backend's own threads use the JIT's)."""
        # under CPU_MIN_CHUNK_BYTES the work is one chunk whatever the thread count:
        # then Numba's threads are neither asked for nor started
        small = len(data) < config.CPU_MIN_CHUNK_BYTES
        drivers = self._aot if use_aot and small else None
        job = _Batch(data, doc_offsets, stream_key, first_doc, 1 if small else _numba().get_num_threads(),
                     drivers=drivers, out=_scratch(len(data)))
        if job.left == 1:  # one chunk: the loop body of encode_segments, called directly
            self._run_chunk(job, 0, alpha)
        elif job.left:
            t = self.trie
            scores, run_alpha = self._scores_for(alpha)
            seg, chunks = job.seg, job.chunks
            # chunks are handed to threads one at a time (not split up front),
            # so a thread slowed by other work on its core does not stall the rest
            with _numba().parallel_chunksize(1):
                _jit().encode_segments(data, seg.start, seg.end, seg.key, seg.pos, chunks,
                                t.cells, t.node_id, scores, t.max_len,
                                run_alpha, job.out, job.counts)
        return job.finish(add_bos, add_eos)

    def _run_chunk(self, job, c, alpha):
        """The lattice over chunk ``c`` of a :class:`_Batch` (Numba, GIL released)."""
        t = self.trie
        scores, run_alpha = self._scores_for(alpha)
        seg = job.seg
        (job.drivers or _jit()).encode_chunk(job.data, seg.start, seg.end, seg.key, seg.pos,
                                             job.chunks[c], job.chunks[c + 1], t.cells, t.node_id,
                                             scores, t.max_len, run_alpha, job.out, job.counts)

    def encode_texts_in_threads(self, texts, batch_bytes, n_threads, alpha, stream, add_bos, add_eos):
        """CPU, several threads, one shared queue of chunks of segments.

        A thread packs the next small batch (Python, under the GIL) while the
        queue holds less than ``n_threads`` batches of work; otherwise it takes
        the next chunk (runs of whole segments of ``config.CPU_THREAD_CHUNK_BYTES``
        or more, ``chunk_bounds``) of any batch
        and runs the one-thread lattice on it (Numba, GIL released). The
        thread that finishes a batch's last chunk lays out its ids. So the
        threads stay busy to the end whatever the document sizes (a long
        document is split between them at segment boundaries), and the first
        batches are small (``iter_packed``'s ramp) so that all threads start
        tokenizing early. The last batch of an input of known length is cut
        in finer chunks (``config.CPU_THREAD_LAST_CHUNK_BYTES``) so that the
        threads also stop together. The calling thread is one of the
        ``n_threads``, and Python's switch interval is shortened meanwhile
        (``config.CPU_THREAD_SWITCH_INTERVAL``): a thread back from the
        lattice then waits for the GIL at most that long while another one
        packs. Segments are the lattice's units and each one's ids
        do not depend on the chunking: the output equals one thread's.

        Returns ``[(first document index, ids, offsets)]`` per batch, in no
        particular order (only on threading layers that allow concurrent
        calls: :func:`concurrent_numba_ok`; ``scatter_tokens`` is a parallel
        function).
        """
        numba = _numba()
        small = min(batch_bytes, config.CPU_THREAD_BATCH_BYTES)
        docs = _as_documents(texts, lazy=True)
        n_docs = len(docs) if hasattr(docs, "__len__") else None  # None: a stream
        batches = iter_packed(docs, small, first_batch_bytes=max(1, small // 8))
        ahead = n_threads * small  # bytes of queued chunks under which a free thread packs
        cond = threading.Condition()
        tasks = deque()  # (batch, chunk index, bytes)
        state = {"packing": False, "done": False, "queued": 0}
        results, errors = [], []

        def next_task():
            """A chunk to run, ``None`` to pack the next batch, ``False`` to stop."""
            with cond:
                while True:
                    if errors:
                        return False
                    if not state["packing"] and not state["done"] and state["queued"] < ahead:
                        state["packing"] = True
                        return None
                    if tasks:
                        task = tasks.popleft()
                        state["queued"] -= task[2]
                        return task
                    if state["done"] and not state["packing"]:
                        return False  # the chunks still running finish their own batches
                    cond.wait()

        def pack():
            job, exhausted = None, False
            try:
                item = next(batches, None)
                if item is None:
                    exhausted = True
                else:
                    first, data, doc_off = item
                    # the last batch in finer chunks, so the threads run out of work together
                    last = n_docs is not None and first + len(doc_off) - 1 >= n_docs
                    chunk = config.CPU_THREAD_CHUNK_BYTES
                    job = _Batch(data, doc_off, stream, first, n_threads,
                                 min(chunk, config.CPU_THREAD_LAST_CHUNK_BYTES) if last else chunk)
                    if not job.left:  # no segment: nothing to queue
                        results.append((first, *job.finish(add_bos, add_eos)))
            finally:
                with cond:
                    state["packing"] = False
                    state["done"] |= exhausted
                    if job is not None and job.left:
                        sizes = job.chunk_bytes().tolist()
                        tasks.extend((job, c, b) for c, b in enumerate(sizes))
                        state["queued"] += sum(sizes)
                    cond.notify_all()

        def work():
            try:
                numba.set_num_threads(1)  # this thread's own count: scatter_tokens runs on it alone
                while True:
                    task = next_task()
                    if task is False:
                        return
                    if task is None:
                        pack()
                        continue
                    job, c, _ = task
                    self._run_chunk(job, c, alpha)
                    with cond:
                        job.left -= 1
                        last = not job.left
                    if last:
                        results.append((job.first, *job.finish(add_bos, add_eos)))
            except BaseException as e:  # re-raised in the calling thread
                with cond:
                    errors.append(e)
                    cond.notify_all()

        # the calling thread is worker 0 (one thread fewer to start and to wait for);
        # work() sets its Numba thread count, put back after
        threads = [threading.Thread(target=work, name=f"gpu_bytepiece-{i}", daemon=True)
                   for i in range(1, n_threads)]
        own = numba.get_num_threads()
        with switch_interval(config.CPU_THREAD_SWITCH_INTERVAL):
            for t in threads:
                t.start()
            try:
                work()
            finally:
                numba.set_num_threads(own)
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        return results


class _Batch:
    """One packed batch on its way through the lattice: its segments, their
    chunks (``chunk_bounds`` for ``n_threads``, none under ``min_chunk_bytes``), the scratch the chunks write
    their ids into, and how many chunks are still to run."""

    def __init__(self, data, doc_offsets, stream_key, first_doc, n_threads, min_chunk_bytes=None, *,
                 drivers=None, out=None):
        self.first = first_doc
        self.data = data
        self.drivers = drivers  # gpu_bytepiece.aot's drivers, or None: the JIT's
        self.n_docs = len(doc_offsets) - 1
        self.seg = seg = segment_table(data, doc_offsets, stream_key, first_doc,
                                       find=None if drivers is None else drivers.find_segments)
        n_seg = len(seg.start)
        self.out = np.empty(len(data), dtype=np.uint32) if out is None else out  # ids never alias it
        self.counts = np.zeros(n_seg, dtype=np.int64)
        self.chunks = (chunk_bounds(seg.end - seg.start, n_threads, min_chunk_bytes) if n_seg
                       else np.zeros(1, np.int64))
        self.left = len(self.chunks) - 1  # chunks not run yet

    def chunk_bytes(self):
        """Input bytes of each chunk."""
        seg = self.seg
        return seg.end[self.chunks[1:] - 1] - seg.start[self.chunks[:-1]]

    def finish(self, add_bos, add_eos):
        """``(ids, offsets)`` once every chunk has run."""
        seg, chunks, counts, out = self.seg, self.chunks, self.counts, self.out
        n_seg = len(seg.start)
        dest, offsets = segment_layout(seg.doc, counts, self.n_docs, add_bos, add_eos)
        if not n_seg:
            ids = np.empty(int(offsets[-1]), dtype=np.uint32)
        elif not (add_bos or add_eos):
            # chunks wrote their ids back to back: join the chunk runs
            first = seg.start[chunks[:-1]]
            cum = np.concatenate(([0], np.cumsum(counts)))
            totals = cum[chunks[1:]] - cum[chunks[:-1]]
            ids = np.concatenate([out[a:a + t] for a, t in zip(first.tolist(), totals.tolist())])
        else:
            cum = np.concatenate(([0], np.cumsum(counts)))
            chunk_of = np.repeat(np.arange(len(chunks) - 1), np.diff(chunks))
            src = seg.start[chunks[:-1]][chunk_of] + cum[:-1] - cum[chunks[:-1]][chunk_of]
            ids = np.empty(int(offsets[-1]), dtype=np.uint32)
            (self.drivers or _jit()).scatter_tokens(out, src, counts, dest, ids)
        put_specials(ids, offsets, add_bos, add_eos)
        return ids, offsets


_LOCAL = threading.local()


@contextmanager
def reuse_scratch():
    """Inside the block, this thread's batches encoded one after the other
    (``encode_packed``) write their ids into one scratch instead of a new
    array each: 4 bytes per input byte, whose fresh pages cost a page fault
    each (~2% of a one-thread call of several batches). The scratch is let
    go when the block ends, so nothing stays held between calls. The
    returned ids never alias it (``_Batch.finish`` copies them out); the
    threaded path does not use it (its batches overlap)."""
    outer = getattr(_LOCAL, "scratch", None)
    _LOCAL.scratch = [None]
    try:
        yield
    finally:
        _LOCAL.scratch = outer


def _scratch(n):
    """A uint32 array of ``n`` to write a batch's ids into: this thread's reused
    scratch inside :func:`reuse_scratch`, else ``None`` (a new one)."""
    slot = getattr(_LOCAL, "scratch", None)
    if slot is None:
        return None
    if slot[0] is None or slot[0].shape[0] < n:
        # room for the next batches too: they differ in size by about a document
        slot[0] = np.empty(n + (n >> 3) + 4096, dtype=np.uint32)
    return slot[0][:n]


_SWITCH_LOCK = threading.Lock()
_SWITCH = {"users": 0, "restore": None, "set": None}


@contextmanager
def switch_interval(seconds):
    """Python's thread switch interval at most ``seconds`` inside the block
    (``None``: unchanged); see ``config.CPU_THREAD_SWITCH_INTERVAL`` for why.

    Calls from several threads at once share one change: the first one in
    lowers the interval, the last one out restores it, unless something else
    set another interval meanwhile (then that one stays).
    """
    if not seconds:
        yield
        return
    with _SWITCH_LOCK:
        if not _SWITCH["users"]:
            old = sys.getswitchinterval()
            if old > seconds:
                sys.setswitchinterval(seconds)
                _SWITCH.update(restore=old, set=sys.getswitchinterval())
            else:
                _SWITCH.update(restore=None, set=None)
        _SWITCH["users"] += 1
    try:
        yield
    finally:
        with _SWITCH_LOCK:
            _SWITCH["users"] -= 1
            if not _SWITCH["users"] and _SWITCH["restore"] is not None:
                if sys.getswitchinterval() == _SWITCH["set"]:
                    sys.setswitchinterval(_SWITCH["restore"])
                _SWITCH.update(restore=None, set=None)


def concurrent_numba_ok() -> bool:
    """Whether parallel Numba functions may run from several threads at once:
    true for the OpenMP and TBB threading layers, not for ``workqueue``."""
    global _CONCURRENT_OK
    if _CONCURRENT_OK is None:
        numba = _numba()
        try:
            from numba.np.ufunc import parallel

            parallel._launch_threads()
            _CONCURRENT_OK = numba.threading_layer() in ("omp", "tbb")
        except Exception:  # pragma: no cover - numba internals moved
            _CONCURRENT_OK = False
    return _CONCURRENT_OK

def numba_thread_count() -> int:
    """Numba's current thread count (imports Numba)."""
    return _numba().get_num_threads()


def set_numba_threads(threads: int | None) -> None:
    """Numba's CPU threads for this process from now on (None: leave them; capped at Numba's pool)."""
    if threads:
        numba = _numba()
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))


@contextmanager
def numba_threads(num_threads):
    """Numba's parallel regions run on ``num_threads`` threads inside the block.

    ``None`` leaves the count as it is; ``-1`` (any negative) means every
    thread Numba started; more than that is capped. The tokenizer's
    ``num_threads`` and the trainer's ``workers`` both go through here.
    """
    if num_threads is None:
        yield
        return
    numba = _numba()
    if num_threads < 0:
        num_threads = numba.config.NUMBA_NUM_THREADS
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or -1 (all), got {num_threads}")
    old = numba.get_num_threads()
    numba.set_num_threads(min(int(num_threads), numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(old)
