"""The n-gram side of training: counting pass, per-level pruning, the n-gram model.

Each byte position has one position key (:func:`gpu_bytepiece.core.ngram.position_key`);
the engine counts them per batch as sorted runs, :class:`~.runs.RunStore`
merges the runs exactly, and :class:`LevelCounts` streams the merged keys
into the n-grams of every length that the reference's pruning keeps.
:class:`NgramModel` holds their log-probabilities in the arrays the n-gram
Viterbi reads.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..cpu_fallback.train import fill_ngram_table, level_groups
from ..files import fsync_file
from .checkpoint import PassCheckpoints
from ..progress import progress_bar
from .runs import RunStore

__all__ = ["LevelCounts", "NgramModel", "count_ngrams"]

_U8 = np.uint64(8)
_log = logging.getLogger(__name__)
#: The n-gram table's file when it is memory-mapped (over the memory budget).
TABLE_FILE = "ngram_table.bin"


class LevelCounts:
    """Streams sorted distinct position keys into pruned per-level n-gram counts.

    Level ``k`` (1..order) collects ``(k-gram as a big-endian integer, count)``
    for the n-grams kept by the reference's pruning (``count >= min_count``
    for ``k >= 2``, all for ``k = 1``); groups that straddle blocks carry over
    (``cpu_fallback.train.level_groups``).
    """

    def __init__(self, order, min_count):
        self.order = order
        self.thr = [0, 0] + [int(math.ceil(min_count))] * (order - 1)
        self.total = 0
        self.carry = [np.zeros(3, np.uint64) for _ in range(order + 1)]
        self.keys = [[] for _ in range(order + 1)]
        self.counts = [[] for _ in range(order + 1)]

    def feed(self, keys, counts, final=False):
        """Add one sorted block of distinct position keys and their counts (``final``: the last)."""
        self.total += int(counts.sum())
        no_k, no_c = np.zeros(0, np.uint64), np.zeros(0, np.int64)
        for k in range(1, self.order + 1):
            n = level_groups(keys, counts, k, self.thr[k], self.carry[k].copy(), final, no_k, no_c, False)
            ok = np.empty(n, np.uint64)
            oc = np.empty(n, np.int64)
            level_groups(keys, counts, k, self.thr[k], self.carry[k], final, ok, oc, True)
            if n:
                self.keys[k].append(ok)
                self.counts[k].append(oc)

    def finish(self):
        """Close the open groups: ``[(k-grams, counts)]`` for ``k = 1..order``, sorted."""
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
        :func:`gpu_bytepiece.core.ngram.ngram_lookup`).
    ht_shift, ht_mask : uint64
    n_kept : list of int
        Kept n-grams per length ``1..order``.
    total : int
        The 0-gram count (positions + added missing bytes).
    """

    def __init__(self, levels, positions, order, budget=None, tmp=None):
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
        self.table_file = None
        if budget is not None and tmp is not None and (16 << bits) > budget:
            # over the budget: the table lives in a memory-mapped file (the page cache holds what is read)
            self.table_file = os.path.join(tmp(), TABLE_FILE)
            self.ht = np.memmap(self.table_file, dtype=np.uint64, mode="w+", shape=(2 << bits,))
            _log.info("n-gram table of %d n-grams (%.0f MB) is over the memory budget (%.0f MB): "
                      "memory-mapped from %s", n, (16 << bits) / 1e6, budget / 1e6, self.table_file)
        else:
            self.ht = np.zeros(2 << bits, dtype=np.uint64)
        fill_ngram_table(keys, vals, bits, self.ht)
        self.htf = self.ht.view(np.float64)
        self.ht_shift = np.uint64(64 - bits)
        self.ht_mask = np.uint64((1 << bits) - 1)

    def arrays(self) -> dict:
        """The model as named arrays (a checkpoint); :meth:`from_arrays` reads them back.

        A memory-mapped table is flushed and named, not copied.
        """
        a = {"lp1": self.lp1, "lp2": self.lp2,
             "meta": np.array([self.order, int(self.ht_shift), int(self.ht_mask), self.total] + self.n_kept,
                              dtype=np.uint64)}
        if self.table_file is None:
            a["ht"] = self.ht
        else:
            self.ht.flush()
            fsync_file(self.table_file)
        return a

    @classmethod
    def from_arrays(cls, a, tmp=None):
        """The model :meth:`arrays` described (a memory-mapped table is mapped again from ``tmp()``)."""
        self = cls.__new__(cls)
        meta = [int(x) for x in a["meta"]]
        self.order, self.total, self.n_kept = meta[0], meta[3], meta[4:]
        self.lp1, self.lp2 = a["lp1"], a["lp2"]
        self.table_file = None
        if "ht" in a:
            self.ht = a["ht"]
        else:
            self.table_file = os.path.join(tmp(), TABLE_FILE)
            self.ht = np.memmap(self.table_file, dtype=np.uint64, mode="r+")
        self.htf = self.ht.view(np.float64)
        self.ht_shift, self.ht_mask = np.uint64(meta[1]), np.uint64(meta[2])
        return self


def count_ngrams(trainer, corpus, engine, budget, tmp, progress, work=None, cluster=None):
    """The first pass: count position keys, then the pruned n-gram model.

    Parameters
    ----------
    trainer : Trainer
        Its ``order`` and ``min_count``; ``stats`` gets the pass's figures.
    corpus : Corpus
    engine : CPUEngine or CUDAEngine
        Cuts segments and counts position keys.
    budget : int
        Memory budget of the count runs (then spilled to ``tmp()``).
    progress : bool
    work : WorkDir, optional
        Checkpoints: the finished model (``ngrams.npz``) is loaded instead of
        counting; else the pass continues after its last checkpoint.
    cluster : RayPasses, optional
        Count the batches' keys on Ray actors (:mod:`.ray`), reduced here.

    Returns
    -------
    NgramModel
    """
    if work is not None and work.exists("ngrams.json"):
        meta = work.load_json("ngrams.json")
        corpus.restore(meta["corpus"])
        trainer.stats.update(meta["stats"])
        trainer.stats.setdefault("resumed", {})["ngrams"] = True
        return NgramModel.from_arrays(work.load_arrays("ngrams.npz"), tmp)
    store = RunStore(budget, tmp, "ngrams")
    ckpt = PassCheckpoints(work, "pass1", store, corpus)
    trainer.stats.setdefault("resumed", {})["pass1_batches"] = ckpt.skip
    bar = progress_bar(progress and not ckpt.complete, desc="Count Ngrams", unit="B", unit_scale=True,
                       total=corpus.size_hint)
    bar.update(corpus.total_bytes)

    def add(runs):
        while runs:
            store.add(*runs.pop(0))

    def count(data, offsets):
        add(engine.count_keys(data, *engine.segments(data, offsets)))

    batches = corpus.numbered(corpus.first_pass(ckpt.skip)) if not ckpt.complete else ()
    if cluster is not None:
        batches, count = cluster.count_keys(batches), add
    counted = ckpt.run(batches, bar, count)
    trainer.stats.setdefault("batches_counted", {})["pass1"] = counted
    if corpus.total_bytes == 0:
        raise ValueError("empty corpus: the texts hold no characters to train on")
    trainer.stats.update(n_docs=corpus.n_docs, n_bytes=corpus.total_bytes)
    levels = LevelCounts(trainer.order, trainer.min_count)
    bar = progress_bar(progress, desc="Prune Ngrams", unit=" keys", unit_scale=True, total=store.entries_upper_bound())
    n_keys = 0
    for keys, counts in store.blocks(remove=work is None):
        levels.feed(keys, counts)
        n_keys += int(keys.shape[0])
        bar.update(int(keys.shape[0]))
        del keys, counts
    bar.close()
    trainer.stats.update(n_ngram_spills=store.n_spilled)
    if levels.total != corpus.total_bytes:  # pragma: no cover - internal invariant
        raise RuntimeError(f"n-gram counts cover {levels.total} positions, expected {corpus.total_bytes}")
    model = NgramModel(levels.finish(), levels.total, trainer.order, budget, tmp)
    trainer.stats["ngram_table_mapped"] = model.table_file is not None
    trainer.stats.update(n_position_keys=n_keys, ngrams_kept=model.n_kept)
    if work is not None:
        keep = ("n_docs", "n_bytes", "n_ngram_spills", "n_position_keys", "ngrams_kept", "ngram_table_mapped")
        work.save_arrays("ngrams.npz", **model.arrays())
        work.save_json("ngrams.json", {"corpus": corpus.state(),
                                       "stats": {k: trainer.stats[k] for k in keep}})
        ckpt.done()
    return model
