"""BytePiece's trainer, exact: a byte n-gram language model, then Unigram pruning.

``Trainer(order=6, max_vocab_size=10000, max_piece_length=36, min_count=2,
isolate_digits=False, ensure_unicode=True)``, ``train(texts, workers=...,
batch_size=..., device='auto')`` and ``save(path)`` behave as BytePiece 0.6.3's
``Trainer``: with the same parameters on the same texts the saved model has
the same pieces, ids and counts (see ``../shared/docs/BYTEPIECE.md`` section 4
and ``tests/test_trainer.py``). The work is array work instead of Python
dictionaries:

1. **Count n-grams.** Texts are NFC-normalized, UTF-8 packed in batches and
   cut into training segments (``.{,10000}\\n{1,100}|.{1,10000}`` in
   characters). Each byte position ``p`` gets one *position key*: the
   ``min(order, segment end - p)`` bytes starting at ``p``, big-endian in the
   top 56 bits of a ``uint64``, their number in the low 8 bits. Sorting the keys
   and counting runs (``cpu_fallback``) or hashing them (``kernels``) gives
   sorted ``(key, count)`` runs; runs are merged exactly, and spilled to disk
   when they outgrow ``memory_budget``. The count of a ``k``-gram is the sum of
   the counts of the keys holding at least ``k`` bytes that start with it; in
   key order those are contiguous, so one streaming pass over the merged run
   yields every level, pruned by ``min_count`` as it goes: memory holds the
   kept n-grams, never the positions.
2. **Prune n-grams** exactly as the reference: missing bytes get count 1 (and
   the 0-gram one more), n-grams of length >= 2 below ``min_count`` go, and
   ``lp(x) = log c(x) - log c(x[:-1])`` (float64, numpy's ``log``).
3. **Segment** each training segment with the n-gram Viterbi
   (:func:`ngram_viterbi`, one plain function compiled with ``numba.njit`` in
   ``cpu_fallback.train`` and ``numba.cuda.jit(device=True)`` in
   ``kernels.train``), and count the pieces: pieces of up to 7 bytes as
   packed keys (sorted runs, like the n-grams, spilled over the budget),
   longer ones in a hash table of byte strings.
4. **Prune pieces**: the reference's loop (split dropped pieces with the
   Unigram tokenizer of the kept ones, drop wasted pieces until the set is
   stable, cut to each size), with the shared Unigram lattice
   (``gpu_bytepiece.core.lattice``) run on each piece as one segment (raw bytes,
   as the reference's ``Tokenizer._tokenize``).

Memory: one text batch, the count runs up to ``memory_budget`` (then spilled
to disk and merged back by key ranges), the kept n-grams, and the distinct
pieces. Texts are read twice (a one-shot iterator is spilled to disk once).
``train`` sets glibc's mmap threshold (see :func:`_tune_malloc`).

Limits: ``order`` is 1..7 (an n-gram must fit a 64-bit key with its length).
Workers, batch sizes, memory budget and device never change the model.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from contextlib import contextmanager

import numba
import numpy as np

from .model import Model, save_model
from .text import TextError, normalize_str

__all__ = ["Trainer", "MAX_ORDER", "ngram_viterbi", "position_key", "ngram_lookup"]

#: Largest supported ``order``: 7 bytes + a length byte fill a uint64 key.
MAX_ORDER = 7

#: Training segments: at most this many non-newline characters ...
SEGMENT_MAX_CHARS = 10000
#: ... followed by at most this many newlines (BytePiece's ``normalize``).
SEGMENT_MAX_NEWLINES = 100

_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)
_ONE = np.uint64(1)
_U8 = np.uint64(8)
_LOW8 = np.uint64(0xFF)
_LOW16 = np.uint64(0xFFFF)


# --------------------------------------------------------------------------
# Shared per-position / per-segment functions. Plain Python bodies with no
# allocation, exception or Python object: ``cpu_fallback.train`` compiles them
# with numba.njit and ``kernels.train`` with numba.cuda.jit(device=True), so
# both targets run the same integer and float64 arithmetic in the same order.
# --------------------------------------------------------------------------


def position_key(data, p, end, order):
    """The key of position ``p`` of a segment ending at ``end``.

    The ``n = min(order, end - p)`` bytes ``data[p:p + n]`` big-endian in bits
    63..8 (byte ``t`` at bits ``63 - 8t .. 56 - 8t``), ``n`` in bits 7..0. Keys
    sort like their bytes (zero-padded), then by length, so the keys holding
    at least ``k`` bytes that share their first ``k`` bytes are contiguous in
    sorted order; ``key >> (64 - 8k)`` is that ``k``-gram.
    """
    n = end - p
    if n > order:
        n = order
    k = np.uint64(0)
    for t in range(n):
        k |= np.uint64(data[p + t]) << np.uint64(56 - 8 * t)
    return k | np.uint64(n)


def ngram_lookup(key, ht, htf, ht_shift, ht_mask):
    """``lp`` of an n-gram of length >= 3 in the open-addressing table, or -inf.

    ``key`` is ``(bytes as a big-endian integer) << 8 | length`` (never 0).
    Slot ``h`` holds its key at ``ht[2h]`` and its ``lp`` at ``htf[2h + 1]``
    (``htf`` is ``ht`` viewed as float64: one cache line per probe); empty
    slots hold key 0; linear probing.
    """
    h = (key * _HASH_MUL) >> ht_shift
    while True:
        k = ht[2 * h]
        if k == key:
            return htf[2 * h + 1]
        if k == 0:
            return -math.inf
        h = (h + _ONE) & ht_mask


def ngram_viterbi(data, start, end, order, ensure_unicode, lp1, lp2, ht, htf,
                  ht_shift, ht_mask, node, prev, routes, roff, flags):
    """The n-gram language-model Viterbi of one training segment.

    Tags ``0..order-1``: a byte's position in its piece (capped). Node score of
    byte ``i`` with tag ``j``: ``lp`` of ``data[i-j..i]`` (-inf when pruned or
    when ``j > i``); with ``ensure_unicode`` a UTF-8 continuation byte
    (0x80..0xBF) cannot take tag 0. Transitions ``a -> 0`` and
    ``a -> min(a+1, order-1)`` score 0, all others -inf. Sums are
    ``(prev[a] + 0.0) + node[b]`` and ties go to the lowest ``a``, as numpy's
    ``(nodes[i-1][:, None] + trans + nodes[i]).argmax(0)`` in the reference.

    Parameters
    ----------
    data : uint8[:]
        Bytes; the segment is ``data[start:end]``.
    order : int
        Tags per byte, 1..7.
    ensure_unicode : bool
    lp1 : float64[256]
        ``lp`` of single bytes.
    lp2 : float64[65536]
        ``lp`` of 2-grams (index ``b0 << 8 | b1``; -inf when pruned).
    ht, htf, ht_shift, ht_mask
        Open-addressing table of the n-grams of length >= 3 (see
        :func:`ngram_lookup`).
    node, prev : float64[order]
        Scratch.
    routes : uint8[:]
        Scratch of ``(end - start - 1) * order`` bytes from ``roff``.
    flags : uint8[:]
        Output: ``flags[i] = 1`` where byte ``i`` of the segment takes tag 0
        on the best path (a piece starts there), else 0.
    """
    n = end - start
    last = order - 1
    ninf = -math.inf
    w = np.uint64(0)
    for r in range(n):
        c = data[start + r]
        w = (w << _U8) | np.uint64(c)
        for j in range(order):
            node[j] = ninf
        node[0] = lp1[c]
        m = r + 1
        if m > order:
            m = order
        if m >= 2:
            v = lp2[w & _LOW16]
            node[1] = v
            # kept n-grams are suffix-closed (a suffix occurs wherever its
            # n-gram does), so the first pruned suffix ends the walk
            if v != ninf:
                for ln in range(3, m + 1):
                    suf = w & ((_ONE << np.uint64(8 * ln)) - _ONE)
                    key = (suf << _U8) | np.uint64(ln)
                    # ngram_lookup, inlined (the shared bodies call nothing)
                    h = (key * _HASH_MUL) >> ht_shift
                    while True:
                        hk = ht[2 * h]
                        if hk == key:
                            v = htf[2 * h + 1]
                            break
                        if hk == 0:
                            v = ninf
                            break
                        h = (h + _ONE) & ht_mask
                    node[ln - 1] = v
                    if v == ninf:
                        break
        if ensure_unicode and c >= 0x80 and c < 0xC0:
            node[0] = ninf
        if r == 0:
            for j in range(order):
                prev[j] = node[j]
            continue
        base = roff + (r - 1) * order
        # b = 0: every a may start a new piece
        nb = node[0]
        best0 = (prev[0] + 0.0) + nb
        arg0 = 0
        for a in range(1, order):
            s = (prev[a] + 0.0) + nb
            if s > best0:
                best0 = s
                arg0 = a
        if order >= 2:
            # b = last: from a = last - 1 and a = last (the rest is -inf)
            nb = node[last]
            s1 = (prev[last - 1] + 0.0) + nb
            s2 = (prev[last] + 0.0) + nb
            if s2 > s1:
                routes[base + last] = last
                prev[last] = s2
            elif s1 == ninf:
                routes[base + last] = 0  # the whole column is -inf: argmax is 0
                prev[last] = ninf
            else:
                routes[base + last] = last - 1
                prev[last] = s1
            # 0 < b < last: only from a = b - 1 (descending b: prev[b - 1] is still the old value)
            for b in range(last - 1, 0, -1):
                s = (prev[b - 1] + 0.0) + node[b]
                if s == ninf:
                    routes[base + b] = 0
                else:
                    routes[base + b] = b - 1
                prev[b] = s
        routes[base] = arg0
        prev[0] = best0
    tag = 0
    bv = prev[0]
    for j in range(1, order):
        if prev[j] > bv:
            bv = prev[j]
            tag = j
    flags[start + n - 1] = 1 if tag == 0 else 0
    for r in range(n - 1, 0, -1):
        tag = routes[roff + (r - 1) * order + tag]
        flags[start + r - 1] = 1 if tag == 0 else 0


# --------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------

#: Texts are packed (NFC UTF-8) in batches of about this many bytes.
TRAIN_BATCH_BYTES = 8 << 20
#: Position keys are sorted in sub-batches of this many bytes (8 bytes of key each).
KEY_CHUNK_BYTES = 2 << 20
#: Default memory budget of the n-gram count runs, in bytes.
DEFAULT_MEMORY_BUDGET = 1 << 30
#: Pieces are split (re-tokenized) in batches of this many bytes.
SPLIT_BATCH_BYTES = 8 << 20

_DIGIT_BITS = None


def _digit_bits() -> np.ndarray:
    """Bitmap of the code points Python's ``re`` matches with ``\\d`` (``str.isdecimal``)."""
    global _DIGIT_BITS
    if _DIGIT_BITS is None:
        bits = np.zeros(0x110000 // 8, dtype=np.uint8)
        for cp in range(0x110000):
            if chr(cp).isdecimal():
                bits[cp >> 3] |= 1 << (cp & 7)
        _DIGIT_BITS = bits
    return _DIGIT_BITS


def _release_memory():
    """Give freed heap pages back to the OS (glibc ``malloc_trim``; no-op elsewhere).

    Batches allocate and free big buffers between long-lived count runs; glibc
    keeps such holes in its heaps, which would count in the peak memory.
    """
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None
_MALLOC_TUNED = False
#: Allocations from this size on get their own mapping (glibc ``M_MMAP_THRESHOLD``).
MMAP_THRESHOLD = 1 << 20


def _tune_malloc():
    """Make glibc map big buffers separately, so freeing one gives it back.

    By default glibc raises its mmap threshold to the size of the largest
    buffer freed so far (up to 32 MB); after that, batch buffers come from the
    heap, where freed holes between long-lived count runs are kept: that
    fragmentation alone added ~170 MB to the peak of a 20 MB training. A fixed
    1 MB threshold (``mallopt(M_MMAP_THRESHOLD)``) avoids it. This is a
    process-wide setting and stays after ``train`` returns (it only changes
    where glibc puts allocations of 1 MB and more). No-op without glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


@contextmanager
def _threads(workers):
    if workers is None:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(workers), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _progress(enabled, **kw):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(ncols=0, **kw)


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass

    def set_postfix_str(self, s):
        pass


def _parse_bytes(value, name="memory_budget") -> int:
    """``1073741824``, ``'512M'``, ``'2G'``, ``'64k'`` -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a size in bytes, got {value!r}")
    if isinstance(value, (int, np.integer)):
        n = int(value)
    elif isinstance(value, str):
        s = value.strip().upper().removesuffix("B").removesuffix("I")
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(s[-1:], 1)
        num = s[:-1] if s[-1:] in "KMGT" and s else s
        try:
            n = int(float(num) * mult)
        except ValueError:
            raise ValueError(f"{name}: cannot read {value!r} as a size (e.g. 512M, 2G)") from None
    else:
        raise ValueError(f"{name} must be a size in bytes, got {value!r}")
    if n <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return n


# ------------------------------------------------------------------ input
class _Corpus:
    """Texts as packed NFC UTF-8 batches, twice (once per counting pass).

    A re-iterable (list, dataset, ``train_cli.FileTexts``) is iterated twice, as
    the reference does; a one-shot iterator (generator, open file) is packed
    once and its batches spilled to ``tmp_dir`` for the second pass.
    """

    def __init__(self, texts, batch_bytes, tmp):
        if isinstance(texts, (str, bytes, bytearray, memoryview)):
            raise TypeError("texts must be an iterable of str (one str per document), "
                            f"not a single {type(texts).__name__}")
        try:
            it = iter(texts)
        except TypeError:
            raise TypeError(f"texts must be an iterable of str, got {type(texts).__name__}") from None
        self.texts = texts
        self.first_iter = it
        self.one_shot = it is texts
        self.batch_bytes = batch_bytes
        self.tmp = tmp
        self.spill = None
        self.spill_index = []
        self.total_bytes = 0
        self.last_bytes = 0
        self.n_docs = 0

    def _pack(self, it):
        parts = []
        size = 0
        for i, t in enumerate(it):
            if type(t) is not str:
                if not isinstance(t, str):
                    raise TextError(f"text {i}: expected str, got {type(t).__name__}")
                t = str(t)
            b = normalize_str(t, i)
            parts.append(b)
            size += len(b)
            if size >= self.batch_bytes:
                yield self._join(parts)
                parts, size = [], 0
        if parts:
            yield self._join(parts)

    @staticmethod
    def _join(parts):
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)), out=offsets[1:])
        return np.frombuffer(b"".join(parts), dtype=np.uint8), offsets

    def first_pass(self):
        it, self.first_iter = self.first_iter, None
        if self.one_shot:
            path = os.path.join(self.tmp(), "texts.bin")
            self.spill = open(path, "w+b")
        for data, offsets in self._pack(it):
            self.last_bytes = int(data.shape[0])
            self.total_bytes += self.last_bytes
            self.n_docs += int(offsets.shape[0] - 1)
            if self.spill is not None:
                pos = self.spill.tell()
                self.spill.write(offsets.tobytes())
                self.spill.write(data.tobytes())
                self.spill_index.append((pos, int(offsets.shape[0]), int(data.shape[0])))
            yield data, offsets

    def second_pass(self):
        if self.spill is not None:
            self.spill.flush()
            for pos, n_off, n_data in self.spill_index:
                offsets = np.fromfile(self.spill.name, dtype=np.int64, count=n_off, offset=pos)
                data = np.fromfile(self.spill.name, dtype=np.uint8, count=n_data, offset=pos + 8 * n_off)
                self.last_bytes = n_data
                yield data, offsets
            return
        total = 0
        for data, offsets in self._pack(iter(self.texts)):
            self.last_bytes = int(data.shape[0])
            total += self.last_bytes
            if total > self.total_bytes:
                break
            yield data, offsets
        if total != self.total_bytes:
            raise RuntimeError(
                f"texts changed between the two passes ({self.total_bytes} then {total} UTF-8 bytes): "
                "pass a re-iterable that yields the same texts each time, or an iterator (read once)")

    def close(self):
        if self.spill is not None:
            self.spill.close()
            self.spill = None


# ------------------------------------------------------------------ n-gram counts
class _RunStore:
    """Sorted ``(key, count)`` runs merged exactly; spilled to disk over a budget.

    New runs merge among themselves like a binary counter (a run merges into
    the previous one while that is at most twice its size); once they hold a
    quarter of the main run they are folded into it, in place, in a buffer
    that grows with ``ndarray.resize`` (``realloc``: no second copy). When
    main and small runs outgrow ``budget`` bytes, the main run is written to
    ``tmp`` with a sparse index; at the end :meth:`blocks` merges everything
    in key ranges that fit the budget and yields sorted blocks of distinct
    keys with their total counts.
    """

    SAMPLE = 1 << 14
    #: Small runs are folded into the main run when they reach this fraction of it ...
    FOLD_FRACTION = 4
    #: ... or this many bytes.
    FOLD_MIN_BYTES = 16 << 20

    def __init__(self, budget, tmp, ct, name):
        self.budget = budget
        self.tmp = tmp
        self.merge = ct.merge_runs
        self.merge_into = ct.merge_into
        self.name = name
        self.runs = []
        self.main_k = None
        self.main_c = None
        self.m = 0
        self.spills = []  # (path, n, sample keys)
        self.n_spilled = 0

    @staticmethod
    def _bytes(runs):
        return sum(16 * int(k.shape[0]) for k, _ in runs)

    def _main_bytes(self):
        return 0 if self.main_k is None else 16 * int(self.main_k.shape[0])

    def add(self, keys, counts):
        self.runs.append((keys, counts))
        while len(self.runs) >= 2 and self.runs[-2][0].shape[0] <= 2 * self.runs[-1][0].shape[0]:
            kb, cb = self.runs.pop()
            ka, ca = self.runs.pop()
            self.runs.append(self.merge(ka, ca, kb, cb))
        small = self._bytes(self.runs)
        if small * self.FOLD_FRACTION >= max(16 * self.m, self.FOLD_MIN_BYTES):
            self._fold()
        if self._bytes(self.runs) + self._main_bytes() > self.budget:
            self._fold()
            self._spill()

    def _merge_all(self, runs):
        runs = list(runs)
        while len(runs) > 1:
            nxt = []
            for i in range(0, len(runs) - 1, 2):
                nxt.append(self.merge(*runs[i], *runs[i + 1]))
            if len(runs) % 2:
                nxt.append(runs[-1])
            runs = nxt
        return runs[0] if runs else (np.zeros(0, np.uint64), np.zeros(0, np.int64))

    def _fold(self):
        """Merge the small runs into the main run, in place."""
        if not self.runs:
            return
        kb, cb = self._merge_all(self.runs)
        self.runs = []
        need = self.m + int(kb.shape[0])
        if self.main_k is None:
            self.main_k = np.empty(max(need, 1), np.uint64)
            self.main_c = np.empty(max(need, 1), np.int64)
        elif need > self.main_k.shape[0]:
            cap = max(need, self.m + self.m // 4)
            self.main_k.resize(cap, refcheck=False)
            self.main_c.resize(cap, refcheck=False)
        self.m = int(self.merge_into(self.main_k, self.main_c, self.m, kb, cb))

    def _spill(self):
        if self.m == 0:
            return
        keys, counts = self.main_k[: self.m], self.main_c[: self.m]
        path = os.path.join(self.tmp(), f"{self.name}{self.n_spilled}.bin")
        self.n_spilled += 1
        with open(path, "wb") as f:
            f.write(keys.tobytes())
            f.write(counts.tobytes())
        self.spills.append((path, self.m, keys[:: self.SAMPLE].copy()))
        self.main_k = self.main_c = None
        self.m = 0
        _release_memory()

    def _read(self, spill, a, b):
        path, n, _ = spill
        keys = np.fromfile(path, dtype=np.uint64, count=b - a, offset=8 * a)
        counts = np.fromfile(path, dtype=np.int64, count=b - a, offset=8 * n + 8 * a)
        return keys, counts

    def _lower_bound(self, spill, key):
        path, n, sample = spill
        j = int(np.searchsorted(sample, key, side="left"))
        if j == 0:
            return 0
        a = (j - 1) * self.SAMPLE
        b = min(n, j * self.SAMPLE + 1)
        keys = np.fromfile(path, dtype=np.uint64, count=b - a, offset=8 * a)
        return a + int(np.searchsorted(keys, key, side="left"))

    def blocks(self):
        self._fold()
        if not self.spills:
            if self.m:
                yield self.main_k[: self.m], self.main_c[: self.m]
            self.main_k = self.main_c = None
            self.m = 0
            return
        self._spill()
        # key ranges of about budget / 64 bytes of entries from all runs together
        samples = np.sort(np.concatenate([s[2] for s in self.spills]))
        per_block = max(1, (self.budget // 64) // self.SAMPLE)
        bounds = np.unique(samples[per_block::per_block])
        lo_idx = [0] * len(self.spills)
        for r in range(len(bounds) + 1):
            parts = []
            for i, sp in enumerate(self.spills):
                hi = sp[1] if r == len(bounds) else self._lower_bound(sp, bounds[r])
                if hi > lo_idx[i]:
                    parts.append(self._read(sp, lo_idx[i], hi))
                lo_idx[i] = hi
            if parts:
                yield self._merge_all(parts)
        for path, _, _ in self.spills:
            os.remove(path)
        self.spills = []


class _LevelCounts:
    """Streams sorted distinct position keys into pruned per-level n-gram counts.

    Level ``k`` (1..order) collects ``(k-gram as a big-endian integer, count)``
    for the n-grams kept by the reference's pruning (``count >= min_count``
    for ``k >= 2``, all for ``k = 1``); groups that straddle blocks carry over
    (``cpu_fallback.train.level_groups``).
    """

    def __init__(self, order, min_count, level_groups):
        self.order = order
        self.lg = level_groups
        self.thr = [0, 0] + [int(math.ceil(min_count))] * (order - 1)
        self.total = 0
        self.carry = [np.zeros(3, np.uint64) for _ in range(order + 1)]
        self.keys = [[] for _ in range(order + 1)]
        self.counts = [[] for _ in range(order + 1)]

    def feed(self, keys, counts, final=False):
        self.total += int(counts.sum())
        no_k, no_c = np.zeros(0, np.uint64), np.zeros(0, np.int64)
        for k in range(1, self.order + 1):
            n = self.lg(keys, counts, k, self.thr[k], self.carry[k].copy(), final, no_k, no_c, False)
            ok = np.empty(n, np.uint64)
            oc = np.empty(n, np.int64)
            self.lg(keys, counts, k, self.thr[k], self.carry[k], final, ok, oc, True)
            if n:
                self.keys[k].append(ok)
                self.counts[k].append(oc)

    def finish(self):
        self.feed(np.zeros(0, np.uint64), np.zeros(0, np.int64), final=True)
        out = []
        for k in range(1, self.order + 1):
            keys = np.concatenate(self.keys[k]) if self.keys[k] else np.zeros(0, np.uint64)
            counts = np.concatenate(self.counts[k]) if self.counts[k] else np.zeros(0, np.int64)
            out.append((keys, counts))
            self.keys[k] = self.counts[k] = None
        return out


class NgramModel:
    """The pruned n-gram model in the arrays the Viterbi reads.

    Attributes
    ----------
    order : int
    lp1 : float64[256]
    lp2 : float64[65536]
        ``lp`` of 2-grams by ``b0 << 8 | b1``, -inf when pruned.
    ht, htf : uint64[2 * cap], the same memory as float64
        Open-addressing table of the n-grams of length 3..order, keyed by
        ``(bytes as big-endian integer) << 8 | length`` (see
        :func:`ngram_lookup`).
    ht_shift, ht_mask : uint64
    n_kept : list of int
        Kept n-grams per length ``1..order``.
    total : int
        The 0-gram count (positions + added missing bytes).
    """

    def __init__(self, levels, positions, order, build_table):
        self.order = order
        k1, c1 = levels[0]
        counts1 = np.zeros(256, dtype=np.int64)
        counts1[k1.astype(np.int64)] = c1
        missing = counts1 == 0
        counts1[missing] = 1
        self.total = int(positions) + int(missing.sum())
        levels[0] = (np.arange(256, dtype=np.uint64), counts1)
        self.n_kept = [int(k.shape[0]) for k, _ in levels]
        # lp(x) = log c(x) - log c(x[:-1]) with numpy's float64 log, as the reference
        log_parent = np.log(counts1.astype(np.float64))
        self.lp1 = log_parent - np.log(np.float64(self.total))
        self.lp2 = np.full(65536, -np.inf, dtype=np.float64)
        tab_keys = []
        tab_vals = []
        for k in range(2, order + 1):
            keys, counts = levels[k - 1]
            pkeys = levels[k - 2][0]
            log_c = np.log(counts.astype(np.float64))
            lp = log_c - log_parent[np.searchsorted(pkeys, keys >> _U8)]
            if k == 2:
                self.lp2[keys.astype(np.int64)] = lp
            else:
                tab_keys.append((keys << _U8) | np.uint64(k))
                tab_vals.append(lp)
            levels[k - 2] = None
            log_parent = log_c
        levels.clear()
        n = sum(int(a.shape[0]) for a in tab_keys)
        bits = max(4, int(2 * max(n, 1) - 1).bit_length())
        keys = np.concatenate(tab_keys) if tab_keys else np.zeros(0, np.uint64)
        vals = np.concatenate(tab_vals) if tab_vals else np.zeros(0, np.float64)
        del tab_keys, tab_vals
        self.ht = build_table(keys, vals, bits)
        self.htf = self.ht.view(np.float64)
        self.ht_shift = np.uint64(64 - bits)
        self.ht_mask = np.uint64((1 << bits) - 1)


# ------------------------------------------------------------------ pieces
class _Pieces:
    """Distinct pieces: bytes in ``pool`` at ``off`` with ``ln``, raw ``cnt``."""

    def __init__(self, pool, off, ln, cnt):
        self.pool = pool
        self.off = off
        self.ln = ln
        self.cnt = cnt

    def bytes_of(self, idx):
        pool = self.pool
        return [pool[o:o + n].tobytes() for o, n in zip(self.off[idx].tolist(), self.ln[idx].tolist())]


def _validate_sizes(max_vocab_size):
    sizes = list(max_vocab_size) if isinstance(max_vocab_size, (list, tuple)) else [max_vocab_size]
    if not sizes:
        raise ValueError("max_vocab_size: the list of sizes is empty")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise ValueError(f"max_vocab_size must be an int or a list of ints, got {s!r}")
        if s < 259:
            raise ValueError(f"max_vocab_size {s} is below 259: a model holds the 3 special ids and all 256 bytes")
    return [int(s) for s in sizes]


class Trainer:
    """BytePiece's trainer, exact and fast (Numba CPU / Numba CUDA).

    Parameters
    ----------
    order : int
        N-gram order of the segmenting language model (1..7; BytePiece's 6).
    max_vocab_size : int or list of int
        Vocabulary size (ids included: pieces + 3), at least 259; a list trains
        one model per size (largest first, as BytePiece).
    max_piece_length : int
        Longest piece kept, in bytes.
    min_count : int
        N-grams (length >= 2) and pieces seen fewer times are pruned.
    isolate_digits : bool
        Every decimal digit is a training segment of its own.
    ensure_unicode : bool
        Pieces never start inside a UTF-8 character.

    Notes
    -----
    Same parameters, same texts: same model as ``bytepiece.Trainer``, whatever
    ``workers``, ``batch_size``, ``device`` or memory budget.
    """

    def __init__(self, order=6, max_vocab_size=10000, max_piece_length=36, min_count=2,
                 isolate_digits=False, ensure_unicode=True):
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
            raise ValueError(f"order must be an int in 1..{MAX_ORDER}, got {order!r}")
        sizes = _validate_sizes(max_vocab_size)
        if isinstance(max_piece_length, bool) or not (
                isinstance(max_piece_length, (int, np.integer)) or max_piece_length == math.inf) \
                or max_piece_length < 1:
            raise ValueError(f"max_piece_length must be an int >= 1 (or math.inf), got {max_piece_length!r}")
        if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer, float)) \
                or not min_count >= 0:
            raise ValueError(f"min_count must be a number >= 0, got {min_count!r}")
        self.order = int(order)
        self.max_piece_length = max_piece_length
        self.min_count = min_count
        self.isolate_digits = bool(isolate_digits)
        self.ensure_unicode = bool(ensure_unicode)
        # as BytePiece: a list is trained largest first
        self.max_vocab_size = sorted(sizes)[::-1] if isinstance(max_vocab_size, (list, tuple)) else sizes
        self.models = []
        self.pieces = []
        self.stats = {}

    # ------------------------------------------------------------ training
    def train(self, texts, workers=None, batch_size=1000, device="auto", *,
              memory_budget=None, tmp_dir=None, progress=True, batch_bytes=None):
        """Train on ``texts`` (an iterable of str, read twice or spilled once).

        Parameters
        ----------
        texts : iterable of str
            Documents. A re-iterable (list, ``train_cli.FileTexts``, ...) is read
            twice; a one-shot iterator is read once and spilled to ``tmp_dir``.
        workers : int, optional
            CPU threads (default: Numba's setting, all cores).
        batch_size : int
            Accepted for BytePiece compatibility; batches here are sized in
            bytes (``batch_bytes``). Never changes the model.
        device : {'auto', 'cpu', 'cuda', 'cuda:N'}
            Where n-gram counting and the n-gram Viterbi run (piece pruning
            runs on the CPU).
        memory_budget : int or str, optional
            Bytes of n-gram count runs kept in memory before they are merged
            and spilled to disk (``'512M'``, ``'2G'``; default 1 GiB).
        tmp_dir : str, optional
            Where spills go (default: the system temporary directory).
        progress : bool
            Show a progress bar per stage.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                    or workers < 1):
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else _parse_bytes(memory_budget)
        batch_bytes = TRAIN_BATCH_BYTES if batch_bytes is None else _parse_bytes(batch_bytes, "batch_bytes")
        use_cuda, dev_index = _select_device(device)
        tmp_holder = {}

        def tmp():
            if "dir" not in tmp_holder:
                tmp_holder["dir"] = tempfile.mkdtemp(prefix="gpu-bytepiece-train-", dir=tmp_dir)
            return tmp_holder["dir"]

        corpus = _Corpus(texts, batch_bytes, tmp)
        _tune_malloc()
        self.models, self.pieces, self.stats = [], [], {}
        engine = None
        try:
            with _threads(workers):
                engine = _engine(self, use_cuda, dev_index)
                t0 = time.perf_counter()
                ngrams = self._count_ngrams(corpus, engine, budget, tmp, progress)
                t1 = time.perf_counter()
                pieces = self._count_pieces(corpus, engine, ngrams, budget, tmp, progress)
                del ngrams
                t2 = time.perf_counter()
                results = self._prune_pieces(pieces, engine, progress)
                t3 = time.perf_counter()
        finally:
            corpus.close()
            if engine is not None:
                engine.close()
            if "dir" in tmp_holder:
                shutil.rmtree(tmp_holder["dir"], ignore_errors=True)
        self.stats.update(seconds_ngrams=t1 - t0, seconds_pieces=t2 - t1, seconds_prune=t3 - t2,
                          device=engine.name)
        for idx, counts in results:
            order = np.lexsort((pieces.rank[idx], pieces.ln[idx]))
            idx, counts = idx[order], counts[order]
            self.models.append(Model(pieces=pieces.bytes_of(idx), counts=counts.astype(np.int64),
                                     source="<trainer>"))
        self.pieces = [dict(zip(m.pieces, m.counts.tolist())) for m in self.models]
        return self

    def _count_ngrams(self, corpus, engine, budget, tmp, progress):
        store = _RunStore(budget, tmp, engine.ct, "ngrams")
        bar = _progress(progress, desc="Count Ngrams", unit="B", unit_scale=True)
        for data, offsets in corpus.first_pass():
            seg_start, seg_end = engine.segments(data, offsets)
            runs = engine.count_keys(data, seg_start, seg_end)
            while runs:
                store.add(*runs.pop(0))
            del data, offsets, seg_start, seg_end
            _release_memory()
            bar.update(corpus.last_bytes)
        bar.close()
        if corpus.total_bytes == 0:
            raise ValueError("empty corpus: the texts hold no characters to train on")
        self.stats.update(n_docs=corpus.n_docs, n_bytes=corpus.total_bytes)
        levels = _LevelCounts(self.order, self.min_count, engine.level_groups)
        bar = _progress(progress, desc="Prune Ngrams", unit=" keys", unit_scale=True)
        n_keys = 0
        for keys, counts in store.blocks():
            levels.feed(keys, counts)
            n_keys += int(keys.shape[0])
            bar.update(int(keys.shape[0]))
            del keys, counts
        bar.close()
        self.stats.update(n_ngram_spills=store.n_spilled)
        if levels.total != corpus.total_bytes:  # pragma: no cover - internal invariant
            raise RuntimeError(f"n-gram counts cover {levels.total} positions, expected {corpus.total_bytes}")
        model = NgramModel(levels.finish(), levels.total, self.order, engine.build_table)
        self.stats.update(n_position_keys=n_keys, ngrams_kept=model.n_kept)
        return model

    def _count_pieces(self, corpus, engine, ngrams, budget, tmp, progress):
        bar = _progress(progress, desc="Count Pieces", unit="B", unit_scale=True, total=corpus.total_bytes)
        short = _RunStore(budget, tmp, engine.ct, "pieces")
        table = engine.new_piece_table()
        viterbi = engine.viterbi(ngrams)
        for data, offsets in corpus.second_pass():
            seg_start, seg_end = engine.segments(data, offsets)
            flags = viterbi(data, seg_start, seg_end)
            keys, counts, table = engine.count_pieces(data, flags, seg_start, seg_end, table)
            short.add(keys, counts)
            del data, offsets, seg_start, seg_end, flags, keys, counts
            _release_memory()
            bar.update(corpus.last_bytes)
        bar.close()
        # short pieces (<= 7 bytes, packed keys) then long ones (the table)
        blocks = list(short.blocks()) or [(np.zeros(0, np.uint64), np.zeros(0, np.int64))]
        keys = np.concatenate([k for k, _ in blocks]) if len(blocks) != 1 else blocks[0][0]
        cnt_s = np.concatenate([c for _, c in blocks]) if len(blocks) != 1 else blocks[0][1]
        del blocks
        pool_s, off_s, ln_s = engine.unpack_keys(keys)
        del keys
        _, _, p_off, p_len, p_cnt, pool_l, sizes = table
        n, pool_n = int(sizes[0]), int(sizes[1])
        pool = np.concatenate((pool_s, pool_l[:pool_n]))
        off = np.concatenate((off_s, p_off[:n] + pool_s.shape[0]))
        ln = np.concatenate((ln_s, p_len[:n].astype(np.int64)))
        cnt = np.concatenate((cnt_s, p_cnt[:n]))
        del table, pool_s, off_s, ln_s, cnt_s, p_off, p_len, p_cnt, pool_l
        # complete all bytes (count 1 if missing)
        have = np.zeros(256, dtype=bool)
        have[pool[off[ln == 1]]] = True
        missing = np.flatnonzero(~have).astype(np.uint8)
        if missing.shape[0]:
            off = np.concatenate((off, pool.shape[0] + np.arange(missing.shape[0], dtype=np.int64)))
            pool = np.concatenate((pool, missing))
            ln = np.concatenate((ln, np.ones(missing.shape[0], np.int64)))
            cnt = np.concatenate((cnt, np.ones(missing.shape[0], np.int64)))
        self.stats.update(n_pieces_counted=int(cnt.shape[0]), n_piece_spills=short.n_spilled)
        return _Pieces(pool, off, ln, cnt)

    def _prune_pieces(self, pieces, engine, progress):
        bar = _progress(progress, desc="Prune Pieces", unit=" splits")
        ln, cnt = pieces.ln, pieces.cnt
        keep = (ln == 1) | ((ln <= self.max_piece_length) & (cnt >= self.min_count))
        # kept pieces in byte order (the trie wants it; dropped ones need no order)
        K = engine.lex_sorted(pieces, np.flatnonzero(keep))
        rank = np.full(ln.shape[0], -1, dtype=np.int64)
        rank[K] = np.arange(K.shape[0], dtype=np.int64)
        pieces.rank = rank
        drop = np.flatnonzero(~keep)
        cK = cnt[K] + engine.split(pieces, K, cnt[K], drop, cnt[drop])
        bar.update(1)
        K, cK = self._wasted(pieces, engine, K, cK, bar)
        out = []
        for size in self.max_vocab_size:
            if K.shape[0] <= size - 3:
                out.append((K, cK))
                continue
            order = np.lexsort((rank[K], -ln[K], -cK, (ln[K] > 1).astype(np.int8)))
            top = np.sort(order[: size - 3])  # K is in byte order: so is K[sorted positions]
            rest = order[size - 3:]
            K2, c2 = K[top], cK[top]
            c2 = c2 + engine.split(pieces, K2, c2, K[rest], cK[rest])
            bar.update(1)
            K, cK = self._wasted(pieces, engine, K2, c2, bar)
            out.append((K, cK))
        bar.close()
        return out

    @staticmethod
    def _wasted(pieces, engine, K, cK, bar):
        """Re-tokenize the kept pieces with their own tokenizer until the set is stable."""
        while True:
            res = engine.split(pieces, K, cK, K, cK)
            bar.update(1)
            m = res > 0
            n_before = K.shape[0]
            K, cK = K[m], res[m]
            if K.shape[0] == n_before:
                return K, cK

    # ------------------------------------------------------------ output
    def dump(self, pieces: dict) -> dict:
        """BytePiece's model mapping of ``{piece bytes: count}`` (sorted by length, bytes)."""
        from .model import model_to_json_obj

        items = sorted(pieces.items(), key=lambda t: (len(t[0]), t[0]))
        return model_to_json_obj([k for k, _ in items], [v for _, v in items])

    def save(self, path) -> list:
        """Save as BytePiece does: ``path``, or ``path.SIZE`` per size for a list of sizes.

        A path ending in ``.gz`` is gzip-compressed. Returns the paths written.
        """
        if not self.models:
            raise RuntimeError("nothing to save: call train() first")
        path = os.fspath(path)
        if len(self.models) == 1:
            paths = [path]
        else:
            paths = ["%s.%s" % (path, size) for size in self.max_vocab_size]
        for model, p in zip(self.models, paths):
            save_model(model, p)
        return paths


# ------------------------------------------------------------------ engines
def _select_device(device):
    from .device import resolve_device

    use_cuda, index, _ = resolve_device(device)
    return use_cuda, index


def _engine(trainer, use_cuda, index):
    from gpu_bytepiece.cpu_fallback import train as ct

    eng = _CPUEngine(trainer, ct)
    if use_cuda:
        from gpu_bytepiece.kernels import train as kt

        eng = kt.CUDAEngine(eng, index)
    return eng


class _CPUEngine:
    """The CPU drivers (``cpu_fallback.train``) behind the trainer's stages."""

    name = "cpu"

    def __init__(self, trainer, ct):
        self.t = trainer
        self.ct = ct
        self.merge_runs = ct.merge_runs
        self.build_table = ct.build_ngram_table
        self.level_groups = ct.level_groups
        self.unpack_keys = ct.unpack_keys
        self.digit_bits = _digit_bits() if trainer.isolate_digits else np.zeros(1, np.uint8)
        self.n_threads = numba.get_num_threads()
        self._pool = None

    def map(self, fn, items):
        """``fn`` over ``items`` on the engine's threads (nogil numba + numpy sorts)."""
        if self.n_threads <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.n_threads, thread_name_prefix="gpu-bytepiece-train")
        return list(self._pool.map(fn, items))

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def segments(self, data, offsets):
        return self.ct.train_segments(data, offsets, SEGMENT_MAX_CHARS, SEGMENT_MAX_NEWLINES,
                                      self.t.isolate_digits, self.digit_bits)

    @staticmethod
    def _sub_batches(seg_start, seg_end, nbytes):
        """Ranges ``[s0, s1)`` of whole segments of about ``nbytes`` bytes each."""
        out = []
        s0 = 0
        n_seg = seg_start.shape[0]
        while s0 < n_seg:
            s1 = max(s0 + 1, int(np.searchsorted(seg_end, seg_start[s0] + nbytes, side="right")))
            out.append((s0, s1))
            s0 = s1
        return out

    def count_keys(self, data, seg_start, seg_end):
        """Sorted ``(distinct position keys, counts)`` runs of a batch, one per sub-batch."""
        order = self.t.order
        ct = self.ct

        def one(r):
            s0, s1 = r
            off = int(seg_start[s0])
            keys = np.empty(int(seg_end[s1 - 1]) - off, dtype=np.uint64)
            ct.position_keys_serial(data, seg_start[s0:s1], seg_end[s0:s1], order, keys, off)
            keys.sort()
            return ct.run_lengths(keys)

        return self.map(one, self._sub_batches(seg_start, seg_end, KEY_CHUNK_BYTES))

    def viterbi(self, ng):
        from .cpu_fallback import chunk_bounds

        t = self.t

        def run(data, seg_start, seg_end):
            flags = np.empty(data.shape[0], dtype=np.uint8)
            if seg_start.shape[0]:
                chunks = chunk_bounds(seg_end - seg_start, numba.get_num_threads())
                self.ct.ngram_viterbi_segments(data, seg_start, seg_end, chunks, t.order, t.ensure_unicode,
                                               ng.lp1, ng.lp2, ng.ht, ng.htf, ng.ht_shift, ng.ht_mask, flags)
            return flags

        return run

    def new_piece_table(self):
        return self.ct.new_piece_table(12)

    def count_pieces(self, data, flags, seg_start, seg_end, table):
        """Short pieces of a batch as a sorted run; long ones into ``table``."""
        from .cpu_fallback import chunk_bounds

        ct = self.ct
        chunks = chunk_bounds(seg_end - seg_start, self.n_threads)
        n_short = np.zeros(chunks.shape[0] - 1, dtype=np.int64)
        n_long = np.zeros(chunks.shape[0] - 1, dtype=np.int64)
        ct.piece_spans(flags, seg_start, seg_end, chunks, n_short, n_long)
        short_at = np.concatenate(([0], np.cumsum(n_short)))
        long_at = np.concatenate(([0], np.cumsum(n_long)))
        keys = np.empty(int(short_at[-1]), dtype=np.uint64)
        long_start = np.empty(int(long_at[-1]), dtype=np.int64)
        long_len = np.empty(int(long_at[-1]), dtype=np.int64)
        ct.extract_pieces(data, flags, seg_start, seg_end, chunks, short_at, long_at, keys, long_start, long_len)
        t, h, o, ln, c, pool, sizes = table

        def sort_short(_):
            keys.sort()
            return ct.run_lengths(keys)

        def add_long(_):
            return ct.count_long_pieces(data, long_start, long_len, t, h, o, ln, c, pool, sizes)

        (uk, uc), (t, h, o, ln, c, pool) = self.map(lambda f: f(None), [sort_short, add_long])
        return uk, uc, (t, h, o, ln, c, pool, sizes)

    def lex_sorted(self, pieces, idx):
        """``idx`` (piece indices) sorted by the pieces' bytes."""
        off, ln = pieces.off[idx], pieces.ln[idx]
        key8 = self.ct.prefix_keys(pieces.pool, off, ln)
        order = np.argsort(key8, kind="stable")
        self.ct.fix_prefix_ties(order, key8, pieces.pool, off, ln)
        return idx[order]

    def split(self, pieces, K, cK, T, wT):
        """Counts over ``K`` (lex-sorted piece indices) of the Unigram tokens of pieces ``T``.

        The tokenizer is BytePiece's of the kept pieces ``K`` with counts
        ``cK``: score ``log(count) - log(total)``; each piece of ``T`` is one
        segment (raw bytes, as ``Tokenizer._tokenize``); token counts are
        weighted by ``wT``.
        """
        from .cpu_fallback import chunk_bounds
        from .trie import Trie, _build, pack_cells

        ct = self.ct
        nK = K.shape[0]
        result = np.zeros(nK, dtype=np.int64)
        if T.shape[0] == 0:
            return result
        pool = pieces.pool
        lnK = pieces.ln[K]
        base, check, node_id, node_len = _build(pool, pieces.off[K], lnK, np.arange(nK, dtype=np.int32))
        max_len = int(lnK.max())
        trie = Trie(base=base, check=check, node_id=node_id, node_len=node_len,
                    cells=pack_cells(base, check), max_len=max_len)
        # BytePiece's Tokenizer scores: log(count) - log(sum of counts), float64
        total = int(cK.sum())
        scores = np.log(cK.astype(np.float64)) - np.log(np.float64(total))
        node_score = trie.node_scores(scores)
        lnT = pieces.ln[T]
        cum = np.cumsum(lnT)
        a = 0
        while a < T.shape[0]:
            base_bytes = int(cum[a - 1]) if a else 0
            b = max(a + 1, int(np.searchsorted(cum, base_bytes + SPLIT_BATCH_BYTES, side="right")))
            off = pieces.off[T[a:b]]
            ln = lnT[a:b]
            out_start = np.zeros(b - a, dtype=np.int64)
            np.cumsum(ln[:-1], out=out_start[1:])
            out_ids = np.empty(int(ln.sum()), dtype=np.int32)
            out_n = np.empty(b - a, dtype=np.int64)
            chunks = chunk_bounds(ln, numba.get_num_threads())
            ct.tokenize_pieces(pool, off, ln, chunks, trie.cells, node_id, node_len, node_score, max_len,
                               out_ids, out_start, out_n)
            ct.add_split_counts(out_ids, out_start, out_n, wT[a:b], result)
            a = b
        return result
