"""The distinct pieces of pass 2 in bounded memory.

Pieces of up to 7 bytes are packed keys counted by a :class:`~.runs.RunStore`;
this module holds the others: :class:`LongPieceStore` counts pieces over 7
bytes in a hash table of byte strings and spills it as runs sorted by the
pieces' hash, merged back exactly; :class:`DroppedPieces` keeps the pieces
pruning drops at once (below ``min_count`` or too long; most of the distinct
pieces of a large corpus) on disk past a budget, read back in batches.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from .. import config
from ..cpu_fallback import train_pieces as cp
from ..files import fsync_file
from .memory import release_memory
from .runs import SpilledRuns, key_ranges

__all__ = ["DroppedPieces", "LongPieceStore", "byte_batches"]

_log = logging.getLogger(__name__)


def byte_batches(ln, max_bytes):
    """Ranges ``(a, b)`` of consecutive strings of lengths ``ln`` of about ``max_bytes`` bytes each (one at least)."""
    cum = np.cumsum(ln)
    a, n = 0, int(ln.shape[0])
    while a < n:
        base = int(cum[a - 1]) if a else 0
        b = max(a + 1, int(np.searchsorted(cum, base + max_bytes, side="right")))
        yield a, b
        a = b


class LongPieceStore(SpilledRuns):
    """Distinct pieces over 7 bytes and their counts, exact, in about ``budget`` bytes.

    Pass 2 counts pieces into ``table`` (``engine.new_piece_table``, a hash
    table of byte strings); :meth:`after_batch` spills it when its arrays
    hold over ``budget`` bytes, as a run sorted by the pieces' 64-bit hash:
    a file of ``n`` hashes (uint64), ``n`` counts (int64), ``n + 1`` byte
    offsets (int64) and the bytes, with every ``config.TRAIN_SPILL_SAMPLE``-th
    hash kept in memory. :meth:`blocks` merges the runs by hash ranges (equal
    pieces have equal hashes), counting each range's pieces in a fresh table.

    Parameters
    ----------
    engine : CPUEngine
        Makes the empty tables.
    budget : int
        Bytes of table before a spill.
    tmp : callable
        Returns the folder for spills (made on first use).
    name : str
        Prefix of the spill files.
    """

    def __init__(self, engine, budget, tmp, name="longpieces"):
        super().__init__(tmp, name)
        self.engine = engine
        self.budget = budget
        self.table = engine.new_piece_table()

    def after_batch(self):
        """Spill the table if it is over the budget."""
        if sum(int(a.nbytes) for a in self.table) > self.budget:
            self._spill()

    def _spill(self):
        _, h, o, ln, c, pool, sizes = self.table
        n = int(sizes[0])
        if n == 0:
            return
        order = np.argsort(h[:n], kind="stable")
        data, offsets = cp.gather_pieces(pool, o, ln, order)
        hashes = h[:n][order]
        path = self._next_path()
        with open(path, "wb") as f:
            for a in (hashes, c[:n][order], offsets, data):
                f.write(a.tobytes())
        self._spilled(path, hashes)
        _log.info("long-piece table of %d pieces (%.0f MB) is over its memory budget (%.0f MB): spilled to %s",
                  n, sum(int(a.nbytes) for a in self.table) / 1e6, self.budget / 1e6, path)
        self.table = None
        del h, o, ln, c, pool, order, data, offsets, hashes
        release_memory()
        self.table = self.engine.new_piece_table()

    def checkpoint(self):
        """Spill the table (fsync'd): ``[(file name, entries)]`` of every spill so far."""
        n_before = len(self.spills)
        self._spill()
        return self._checkpointed(n_before)

    @staticmethod
    def _read(spill, a, b):
        path, n, _ = spill
        counts = np.fromfile(path, dtype=np.int64, count=b - a, offset=8 * (n + a))
        offsets = np.fromfile(path, dtype=np.int64, count=b - a + 1, offset=8 * (2 * n + a))
        data = np.fromfile(path, dtype=np.uint8, count=int(offsets[-1] - offsets[0]),
                           offset=8 * (3 * n + 1) + int(offsets[0]))
        return data, offsets - offsets[0], counts

    def blocks(self, remove=True):
        """Yield every distinct piece once with its total count: blocks ``(pool, off, ln, cnt)``.

        ``remove``: delete the spills at the end (else the caller does, with
        :meth:`remove_spills`, once what it made of the blocks is
        checkpointed).
        """
        if not self.spills:
            _, _, o, ln, c, pool, sizes = self.table
            n = int(sizes[0])
            self.table = None
            if n:
                yield pool, o[:n], ln[:n].astype(np.int64), c[:n]
            return
        self._spill()
        self.table = None
        n_all = sum(n for _, n, _ in self.spills)
        per_piece = 40 + sum(os.path.getsize(p) for p, _, _ in self.spills) // max(1, n_all)
        entries = max(1, self.budget // (4 * per_piece))
        for parts in key_ranges(self.spills, entries, self.sample):
            read = [self._read(self.spills[i], a, b) for i, a, b in parts]
            data = np.concatenate([d for d, _, _ in read])
            shift = np.cumsum([0] + [int(d.shape[0]) for d, _, _ in read[:-1]])
            start = np.concatenate([off[:-1] + s for (_, off, _), s in zip(read, shift)])
            length = np.concatenate([np.diff(off) for _, off, _ in read])
            weight = np.concatenate([c for _, _, c in read])
            del read
            bits = max(config.TRAIN_PIECE_TABLE_BITS, int(2 * start.shape[0]).bit_length())
            t, h, o, ln, c, pool, sizes = cp.new_piece_table(bits)
            t, h, o, ln, c, pool = cp.count_long_pieces(data, start, length, weight, t, h, o, ln, c, pool, sizes)
            n = int(sizes[0])
            del t, h, data, start, length, weight
            yield pool, o[:n], ln[:n].astype(np.int64), c[:n]
        if remove:
            self.remove_spills()


class DroppedPieces:
    """Pieces pruning drops at once: bytes, lengths, counts, in no order.

    Held in memory up to ``budget`` bytes, then appended to three files in
    ``folder()`` (:attr:`NAMES`); with ``persist`` (a work folder) always
    written there, fsync'd, by :meth:`finish`.

    Parameters
    ----------
    folder : callable
        Returns the folder of the files (made on first use).
    budget : int
        Bytes held in memory before the pieces go to disk.
    persist : bool
        Write the files even under the budget.
    """

    NAMES = ("dropped_pool.bin", "dropped_len.bin", "dropped_cnt.bin")

    def __init__(self, folder, budget=0, persist=True):
        self.folder = folder
        self.budget = budget
        self.persist = persist
        self.parts = []
        self.held = 0
        self.paths = None
        self.n = 0

    @classmethod
    def on_disk(cls, folder):
        """The pieces a finished :meth:`finish` left in ``folder()``."""
        out = cls(folder)
        out.paths = [os.path.join(folder(), name) for name in cls.NAMES]
        return out

    def add(self, pool, off, ln, cnt, idx):
        """Add pieces ``idx`` of ``(pool, off, ln, cnt)``."""
        data, offsets = cp.gather_pieces(pool, off, ln, idx)
        self.parts.append((data, np.diff(offsets).astype(np.int32), cnt[idx].astype(np.int64)))
        self.held += int(data.nbytes) + 12 * int(idx.shape[0])
        self.n += int(idx.shape[0])
        if self.held > self.budget:
            self._flush()

    def _flush(self):
        if self.paths is None:
            self.paths = [os.path.join(self.folder(), name) for name in self.NAMES]
            if self.held > self.budget:
                _log.info("%d+ pieces below min_count or too long (%.0f MB) are over their share of the memory budget "
                          "(%.0f MB): kept on disk in %s", self.n, self.held / 1e6, self.budget / 1e6, self.paths[0])
            for p in self.paths:
                open(p, "wb").close()
        for j, p in enumerate(self.paths):
            with open(p, "ab") as f:
                for part in self.parts:
                    f.write(part[j].tobytes())
        self.parts = []
        self.held = 0

    def finish(self):
        """Every piece is added: write them out (fsync'd) if on disk or ``persist``."""
        if self.paths is not None or self.persist:
            self._flush()
            for p in self.paths:
                fsync_file(p)

    @property
    def on_disk_now(self) -> bool:
        """The pieces are in files."""
        return self.paths is not None

    def batches(self, max_bytes):
        """Yield ``(pool, off, ln, cnt)`` batches of about ``max_bytes`` bytes of pieces."""
        if self.paths is None:
            if not self.parts:
                return
            pool = np.concatenate([p for p, _, _ in self.parts])
            ln = np.concatenate([x for _, x, _ in self.parts]).astype(np.int64)
            cnt = np.concatenate([c for _, _, c in self.parts])
            off = np.zeros(ln.shape[0], np.int64)
            np.cumsum(ln[:-1], out=off[1:])
            for a, b in byte_batches(ln, max_bytes):
                yield pool, off[a:b], ln[a:b], cnt[a:b]
            return
        p_pool, p_len, p_cnt = self.paths
        n = os.path.getsize(p_len) // 4
        step = max(1, max_bytes // 16)
        at, pos = 0, 0
        while at < n:
            ln = np.fromfile(p_len, dtype=np.int32, count=min(step, n - at), offset=4 * at).astype(np.int64)
            b = next(byte_batches(ln, max_bytes))[1]
            ln = ln[:b]
            cnt = np.fromfile(p_cnt, dtype=np.int64, count=b, offset=8 * at)
            size = int(ln.sum())
            pool = np.fromfile(p_pool, dtype=np.uint8, count=size, offset=pos)
            off = np.zeros(b, np.int64)
            np.cumsum(ln[:-1], out=off[1:])
            yield pool, off, ln, cnt
            at += b
            pos += size

    def remove(self):
        """Delete the files (the pieces are no longer needed)."""
        self.parts = []
        for p in self.paths or ():
            if os.path.exists(p):
                os.remove(p)
