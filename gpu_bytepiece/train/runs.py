"""Exact merging of sorted ``(key, count)`` runs in bounded memory, spilling to disk."""

from __future__ import annotations

import os

import numpy as np

from .. import config
from ..files import fsync_file
from ..cpu_fallback.train import merge_into, merge_runs
from .memory import release_memory

__all__ = ["RunStore", "SpilledRuns", "key_ranges"]


def key_ranges(spills, entries, step):
    """Split sorted spilled runs into key ranges of about ``entries`` entries of all runs together.

    ``spills``: ``(path, n, sample)`` per run, a file starting with its ``n``
    sorted uint64 keys and ``sample`` every ``step``-th of them. Yields, per
    range in key order, ``[(run index, a, b)]``: the run's entries
    ``a..b`` in the range (none empty). Equal keys are never split.
    """
    samples = np.sort(np.concatenate([s[2] for s in spills]))
    per_block = max(1, entries // step)
    bounds = np.unique(samples[per_block::per_block])
    lo_idx = [0] * len(spills)
    for r in range(len(bounds) + 1):
        parts = []
        for i, sp in enumerate(spills):
            hi = sp[1] if r == len(bounds) else _lower_bound(sp, bounds[r], step)
            if hi > lo_idx[i]:
                parts.append((i, lo_idx[i], hi))
            lo_idx[i] = hi
        if parts:
            yield parts


def _lower_bound(spill, key, step):
    path, n, sample = spill
    j = int(np.searchsorted(sample, key, side="left"))
    if j == 0:
        return 0
    a = (j - 1) * step
    b = min(n, j * step + 1)
    keys = np.fromfile(path, dtype=np.uint64, count=b - a, offset=8 * a)
    return a + int(np.searchsorted(keys, key, side="left"))


class SpilledRuns:
    """Sorted runs spilled to files ``NAME<i>.bin`` in ``tmp()``, each starting with its sorted uint64 keys.

    ``spills`` holds ``(path, entries, every config.TRAIN_SPILL_SAMPLE-th
    key)`` per run (what :func:`key_ranges` reads); subclasses write the
    files and call :meth:`_spilled`.
    """

    def __init__(self, tmp, name):
        self.tmp = tmp
        self.name = name
        self.sample = config.TRAIN_SPILL_SAMPLE
        self.spills = []  # (path, n, sample keys)
        self.n_spilled = 0

    def _next_path(self):
        path = os.path.join(self.tmp(), f"{self.name}{self.n_spilled}.bin")
        self.n_spilled += 1
        return path

    def _spilled(self, path, keys):
        self.spills.append((path, int(keys.shape[0]), keys[:: self.sample].copy()))

    def _checkpointed(self, n_before):
        """``[(file name, entries)]`` of every spill so far, the ones after the first ``n_before`` fsync'd."""
        for path, _, _ in self.spills[n_before:]:
            fsync_file(path)
        return [(os.path.basename(p), n) for p, n, _ in self.spills]

    def restore(self, spills):
        """Continue from a checkpoint: ``spills`` as it returned them (files in ``tmp()``)."""
        self.spills = []
        for name, n in spills:
            path = os.path.join(self.tmp(), name)
            keys = np.memmap(path, dtype=np.uint64, mode="r", shape=(n,))
            self.spills.append((path, n, np.array(keys[:: self.sample])))
            del keys
        self.n_spilled = 1 + max((int(name[len(self.name):-4]) for name, _ in spills), default=-1)

    def remove_spills(self):
        """Delete the spill files."""
        for path, _, _ in self.spills:
            if os.path.exists(path):
                os.remove(path)
        self.spills = []


class RunStore(SpilledRuns):
    """Sorted ``(key, count)`` runs merged exactly; spilled to disk over a budget.

    New runs merge among themselves like a binary counter (a run merges into
    the previous one while that is at most twice its size); once they hold
    ``1 / config.TRAIN_FOLD_FRACTION`` of the main run (or
    ``config.TRAIN_FOLD_MIN_BYTES``) they are folded into it, in place, in a buffer
    that grows with ``ndarray.resize`` (``realloc``: no second copy). When
    main and small runs outgrow ``budget`` bytes, the main run is written to
    ``tmp`` with a sparse index; at the end :meth:`blocks` merges everything
    in key ranges that fit the budget and yields sorted blocks of distinct
    keys with their total counts.

    Parameters
    ----------
    budget : int
        Bytes of runs (16 per entry) held before the main run is spilled.
    tmp : callable
        Returns the folder for spills (made on first use).
    name : str
        Prefix of the spill files.
    """

    def __init__(self, budget, tmp, name):
        super().__init__(tmp, name)
        self.budget = budget
        self.runs = []
        self.main_k = None
        self.main_c = None
        self.m = 0

    @staticmethod
    def _bytes(runs):
        return sum(16 * int(k.shape[0]) for k, _ in runs)

    def _main_bytes(self):
        return 0 if self.main_k is None else 16 * int(self.main_k.shape[0])

    def add(self, keys, counts):
        """Add one sorted run of distinct ``keys`` (uint64) with their ``counts`` (int64)."""
        self.runs.append((keys, counts))
        while len(self.runs) >= 2 and self.runs[-2][0].shape[0] <= 2 * self.runs[-1][0].shape[0]:
            kb, cb = self.runs.pop()
            ka, ca = self.runs.pop()
            self.runs.append(merge_runs(ka, ca, kb, cb))
        small = self._bytes(self.runs)
        if small * config.TRAIN_FOLD_FRACTION >= max(16 * self.m, config.TRAIN_FOLD_MIN_BYTES):
            self._fold()
        if self._bytes(self.runs) + self._main_bytes() > self.budget:
            self._fold()
            self._spill()

    @staticmethod
    def merge_all(runs):
        """One sorted run of distinct keys with the summed counts of sorted ``runs`` (merged pairwise)."""
        runs = list(runs)
        while len(runs) > 1:
            nxt = []
            for i in range(0, len(runs) - 1, 2):
                nxt.append(merge_runs(*runs[i], *runs[i + 1]))
            if len(runs) % 2:
                nxt.append(runs[-1])
            runs = nxt
        return runs[0] if runs else (np.zeros(0, np.uint64), np.zeros(0, np.int64))

    def _fold(self):
        """Merge the small runs into the main run, in place."""
        if not self.runs:
            return
        kb, cb = self.merge_all(self.runs)
        self.runs = []
        need = self.m + int(kb.shape[0])
        if self.main_k is None:
            self.main_k = np.empty(max(need, 1), np.uint64)
            self.main_c = np.empty(max(need, 1), np.int64)
        elif need > self.main_k.shape[0]:
            cap = max(need, self.m + self.m // 4)
            self.main_k.resize(cap, refcheck=False)
            self.main_c.resize(cap, refcheck=False)
        self.m = int(merge_into(self.main_k, self.main_c, self.m, kb, cb))

    def _spill(self):
        if self.m == 0:
            return
        keys, counts = self.main_k[: self.m], self.main_c[: self.m]
        path = self._next_path()
        with open(path, "wb") as f:
            f.write(keys.tobytes())
            f.write(counts.tobytes())
        self._spilled(path, keys)
        self.main_k = self.main_c = None
        self.m = 0
        release_memory()

    def entries_upper_bound(self):
        """At least as many entries as :meth:`blocks` yields (what is held and spilled; a progress total)."""
        return sum(n for _, n, _ in self.spills) + self.m + sum(int(k.shape[0]) for k, _ in self.runs)

    def checkpoint(self):
        """Spill everything held in memory (fsync'd): ``[(file name, entries)]`` of every spill so far."""
        n_before = len(self.spills)
        self._fold()
        self._spill()
        return self._checkpointed(n_before)

    def _read(self, spill, a, b):
        path, n, _ = spill
        keys = np.fromfile(path, dtype=np.uint64, count=b - a, offset=8 * a)
        counts = np.fromfile(path, dtype=np.int64, count=b - a, offset=8 * n + 8 * a)
        return keys, counts

    def blocks(self, remove=True):
        """Yield the merged result: sorted blocks of distinct keys and their total counts.

        ``remove``: delete the spills at the end (else the caller does, once
        what it made of the blocks is checkpointed).
        """
        self._fold()
        if not self.spills:
            if self.m:
                yield self.main_k[: self.m], self.main_c[: self.m]
            self.main_k = self.main_c = None
            self.m = 0
            return
        self._spill()
        # key ranges of about budget / TRAIN_MERGE_BLOCK_DIVISOR entries from all runs together
        for parts in key_ranges(self.spills, self.budget // config.TRAIN_MERGE_BLOCK_DIVISOR, self.sample):
            yield self.merge_all([self._read(self.spills[i], a, b) for i, a, b in parts])
        if remove:
            self.remove_spills()
