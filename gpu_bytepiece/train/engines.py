"""The CPU engine: the trainer's stages on the Numba CPU drivers.

An engine cuts a batch into training segments, counts its position keys,
runs the n-gram Viterbi, counts the pieces and splits pieces with a Unigram
tokenizer; the stages in :mod:`.ngrams` and :mod:`.pieces` call it.
:func:`make_engine` picks this one or the CUDA engine
(:mod:`.cuda_engine`), which runs key counting, the Viterbi, piece counting
and the pruning's splits on a GPU and the rest here.
"""

from __future__ import annotations

import itertools

import numba
import numpy as np

from .. import config
from ..cpu_fallback import chunk_bounds
from ..cpu_fallback import train as ct
from ..cpu_fallback import train_pieces as cp
from ..trie import build_trie

__all__ = ["CPUEngine", "make_engine", "SEGMENT_MAX_CHARS", "SEGMENT_MAX_NEWLINES"]

#: Training segments: at most this many non-newline characters ...
SEGMENT_MAX_CHARS = 10000
#: ... followed by at most this many newlines (BytePiece's ``normalize``).
SEGMENT_MAX_NEWLINES = 100

_DIGIT_BITS = None
_NO_WEIGHTS = np.zeros(0, dtype=np.int64)


def _digit_bits() -> np.ndarray:
    """Bitmap of the code points Python's ``re`` matches with ``\\d`` (``str.isdecimal``)."""
    global _DIGIT_BITS
    if _DIGIT_BITS is None:
        bits = np.zeros(0x110000 // 8, dtype=np.uint8)
        for code in range(0x110000):
            if chr(code).isdecimal():
                bits[code >> 3] |= 1 << (code & 7)
        _DIGIT_BITS = bits
    return _DIGIT_BITS


class CPUEngine:
    """The CPU drivers (``cpu_fallback.train``, ``cpu_fallback.train_pieces``) behind the trainer's stages.

    Parameters
    ----------
    trainer : Trainer
        Its ``order``, ``isolate_digits`` and ``ensure_unicode``.
    """

    name = "cpu"

    def __init__(self, trainer):
        self.t = trainer
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
        """Stop the engine's threads."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def segments(self, data, offsets):
        """Training segments of a batch: ``(seg_start, seg_end)``, BytePiece's ``normalize``."""
        return ct.train_segments(data, offsets, SEGMENT_MAX_CHARS, SEGMENT_MAX_NEWLINES,
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

        def one(r):
            s0, s1 = r
            off = int(seg_start[s0])
            keys = np.empty(int(seg_end[s1 - 1]) - off, dtype=np.uint64)
            ct.position_keys(data, seg_start[s0:s1], seg_end[s0:s1], order, keys, off)
            keys.sort()
            return ct.run_lengths(keys)

        return self.map(one, self._sub_batches(seg_start, seg_end, config.TRAIN_KEY_CHUNK_BYTES))

    def viterbi(self, ng):
        """A function ``(data, seg_start, seg_end) -> flags`` (uint8 per byte: 1 where a piece starts)."""
        t = self.t

        def run(data, seg_start, seg_end):
            flags = np.empty(data.shape[0], dtype=np.uint8)
            if seg_start.shape[0]:
                chunks = chunk_bounds(seg_end - seg_start, numba.get_num_threads())
                ct.ngram_viterbi_segments(data, seg_start, seg_end, chunks, t.order, t.ensure_unicode,
                                          ng.lp1, ng.lp2, ng.ht, ng.htf, ng.ht_shift, ng.ht_mask, flags)
            return flags

        return run

    def new_piece_table(self):
        """An empty hash table of long pieces (see ``cpu_fallback.train_pieces.new_piece_table``)."""
        return cp.new_piece_table(config.TRAIN_PIECE_TABLE_BITS)

    def extract_pieces(self, data, flags, seg_start, seg_end):
        """The pieces of a batch: short ones as packed keys (unsorted), long ones as ``(start, length)``."""
        chunks = chunk_bounds(seg_end - seg_start, self.n_threads)
        n_short = np.zeros(chunks.shape[0] - 1, dtype=np.int64)
        n_long = np.zeros(chunks.shape[0] - 1, dtype=np.int64)
        cp.piece_spans(flags, seg_start, seg_end, chunks, n_short, n_long)
        short_at = np.concatenate(([0], np.cumsum(n_short)))
        long_at = np.concatenate(([0], np.cumsum(n_long)))
        keys = np.empty(int(short_at[-1]), dtype=np.uint64)
        long_start = np.empty(int(long_at[-1]), dtype=np.int64)
        long_len = np.empty(int(long_at[-1]), dtype=np.int64)
        cp.extract_pieces(data, flags, seg_start, seg_end, chunks, short_at, long_at, keys, long_start, long_len)
        return keys, long_start, long_len

    @staticmethod
    def short_run(keys):
        """Sorted ``(distinct keys, counts)`` of the packed short pieces ``keys`` (sorted in place)."""
        keys.sort()
        return ct.run_lengths(keys)

    @staticmethod
    def add_long_pieces(data, long_start, long_len, table):
        """``table`` with the long pieces ``data[start:start + length]`` added (see ``count_long_pieces``)."""
        t, h, o, ln, c, pool, sizes = table
        return (*cp.count_long_pieces(data, long_start, long_len, _NO_WEIGHTS, t, h, o, ln, c, pool, sizes), sizes)

    def piece_runs(self, data, flags, seg_start, seg_end):
        """The pieces of a batch: ``(short keys, counts)`` as a sorted run, and the long ones' ``(starts, lengths)``.

        The long pieces come in text order (the order ``add_long_pieces`` adds them in).
        """
        keys, long_start, long_len = self.extract_pieces(data, flags, seg_start, seg_end)
        return (*self.short_run(keys), long_start, long_len)

    def count_pieces(self, data, flags, seg_start, seg_end, table):
        """Short pieces of a batch as a sorted run; long ones into ``table``."""
        keys, long_start, long_len = self.extract_pieces(data, flags, seg_start, seg_end)
        (uk, uc), table = self.map(lambda f: f(), [lambda: self.short_run(keys),
                                                   lambda: self.add_long_pieces(data, long_start, long_len, table)])
        return uk, uc, table

    def lex_sorted(self, pieces, idx):
        """``idx`` (piece indices) sorted by the pieces' bytes."""
        off, ln = pieces.off[idx], pieces.ln[idx]
        key8 = cp.prefix_keys(pieces.pool, off, ln)
        order = np.argsort(key8, kind="stable")
        cp.fix_prefix_ties(order, key8, pieces.pool, off, ln)
        return idx[order]

    def split(self, pieces, K, cK, batches):
        """Counts over ``K`` (lex-sorted piece indices) of the Unigram tokens of the pieces of ``batches``.

        The tokenizer is BytePiece's of the kept pieces ``K`` with counts
        ``cK``: score ``log(count) - log(total)``; each piece of a batch
        ``(pool, off, ln, weights)`` (:meth:`~.pieces.Pieces.batches`) is one
        segment (raw bytes, as ``Tokenizer._tokenize``); token counts are
        weighted by ``weights``. The tokenizer is built at the first batch
        (:meth:`split_tokenizer`), then :meth:`split_with` counts.
        """
        return self.split_lazily(self.split_with, pieces, K, cK, batches)

    def split_with(self, trie, node_score, batches, nK):
        """:meth:`split` with the tokenizer given: ``(trie, node scores)`` of :meth:`split_tokenizer`
        over ``nK`` pieces (what a Ray actor runs on the batches it gets)."""
        result = np.zeros(nK, dtype=np.int64)
        for pool, off, ln, w in batches:
            out_start = np.zeros(ln.shape[0], dtype=np.int64)
            np.cumsum(ln[:-1], out=out_start[1:])
            out_ids = np.empty(int(ln.sum()), dtype=np.int32)
            out_n = np.empty(ln.shape[0], dtype=np.int64)
            chunks = chunk_bounds(ln, numba.get_num_threads())
            cp.tokenize_pieces(pool, off, ln, chunks, trie.cells, trie.node_id, node_score,
                               trie.max_len, out_ids, out_start, out_n)
            cp.add_split_counts(out_ids, out_start, out_n, w, result)
        return result

    @staticmethod
    def split_lazily(split_with, pieces, K, cK, batches):
        """``split_with(trie, node scores, batches, len(K))`` with the tokenizer of pieces ``K`` (counts
        ``cK``, :meth:`split_tokenizer`) built at the first batch; zeros when there is none (the CPU,
        CUDA and Ray splits)."""
        batches = iter(batches)
        first = next(batches, None)
        if first is None:
            return np.zeros(K.shape[0], dtype=np.int64)
        trie, node_score = CPUEngine.split_tokenizer(pieces, K, cK)
        return split_with(trie, node_score, itertools.chain([first], batches), K.shape[0])

    @staticmethod
    def split_tokenizer(pieces, K, cK):
        """BytePiece's Unigram tokenizer of pieces ``K`` (lex-sorted) with counts ``cK``: ``(trie, node scores)``."""
        # ids are positions in K
        trie = build_trie(pieces.bytes_of(K), np.arange(K.shape[0], dtype=np.int32))
        # BytePiece's Tokenizer scores: log(count) - log(sum of counts), float64
        scores = np.log(cK.astype(np.float64)) - np.log(np.float64(int(cK.sum())))
        return trie, trie.node_scores(scores)


def make_engine(trainer, use_cuda, index):
    """The engine for a device: :class:`CPUEngine`, or a CUDA engine on GPU ``index`` around one."""
    eng = CPUEngine(trainer)
    if use_cuda:
        from .cuda_engine import CUDAEngine

        eng = CUDAEngine(eng, index)
    return eng
