"""The piece side of training: counting the pieces the n-gram Viterbi cuts, then pruning them."""

from __future__ import annotations

import time

import numpy as np

from .. import config
from ..cpu_fallback.train_pieces import gather_pieces, unpack_keys
from .checkpoint import PassCheckpoints, kill_point
from .piece_store import DroppedPieces, LongPieceStore, byte_batches
from ..progress import progress_bar
from .runs import RunStore

__all__ = ["Pieces", "count_pieces", "prune_pieces"]


class Pieces:
    """The pieces pruning starts from, in byte order: bytes in ``pool`` at ``off`` with ``ln``, raw ``cnt``.

    Those pieces are the 256 bytes and the pieces seen at least
    ``min_count`` times of at most ``max_piece_length`` bytes; the others,
    which pruning only splits once, are in ``dropped``
    (:class:`~.piece_store.DroppedPieces`). ``rank``: a piece's place in
    byte order.
    """

    def __init__(self, pool, off, ln, cnt, dropped):
        self.pool = pool
        self.off = off
        self.ln = ln
        self.cnt = cnt
        self.rank = np.arange(ln.shape[0], dtype=np.int64)
        self.dropped = dropped

    def bytes_of(self, idx):
        """The bytes of pieces ``idx``, a list of ``bytes``."""
        pool = self.pool
        return [pool[o:o + n].tobytes() for o, n in zip(self.off[idx].tolist(), self.ln[idx].tolist())]

    def batches(self, idx, weights, max_bytes):
        """Pieces ``idx`` with ``weights`` as :meth:`DroppedPieces.batches` yields them."""
        for a, b in byte_batches(self.ln[idx], max_bytes):
            yield self.pool, self.off[idx[a:b]], self.ln[idx[a:b]], weights[a:b]

    def items(self):
        """Every distinct piece counted, dropped ones included: ``(bytes, count)`` pairs."""
        yield from zip(self.bytes_of(self.rank), self.cnt.tolist())
        for pool, off, ln, cnt in self.dropped.batches(config.TRAIN_SPLIT_BATCH_BYTES):
            yield from ((pool[o:o + n].tobytes(), c) for o, n, c in zip(off.tolist(), ln.tolist(), cnt.tolist()))


class _Sorter:
    """Routes merged blocks of distinct pieces: the ones pruning keeps in memory, the others to ``dropped``."""

    def __init__(self, trainer, dropped):
        self.t = trainer
        self.dropped = dropped
        self.parts = []

    def add(self, pool, off, ln, cnt):
        t = self.t
        keep = (ln == 1) | ((ln <= t.max_piece_length) & (cnt >= t.min_count))
        idx = np.flatnonzero(keep)
        data, offsets = gather_pieces(pool, off, ln, idx)
        self.parts.append((data, ln[idx], cnt[idx]))
        self.dropped.add(pool, off, ln, cnt, np.flatnonzero(~keep))

    def kept(self, engine):
        """The kept pieces, the bytes never seen added with count 1, in byte order."""
        pool = np.concatenate([d for d, _, _ in self.parts] + [np.zeros(0, np.uint8)])
        ln = np.concatenate([x for _, x, _ in self.parts] + [np.zeros(0, np.int64)])
        cnt = np.concatenate([c for _, _, c in self.parts] + [np.zeros(0, np.int64)])
        self.parts = []
        off = np.zeros(ln.shape[0], np.int64)
        np.cumsum(ln[:-1], out=off[1:])
        have = np.zeros(256, dtype=bool)
        have[pool[off[ln == 1]]] = True
        missing = np.flatnonzero(~have).astype(np.uint8)
        if missing.shape[0]:
            off = np.concatenate((off, pool.shape[0] + np.arange(missing.shape[0], dtype=np.int64)))
            pool = np.concatenate((pool, missing))
            ln = np.concatenate((ln, np.ones(missing.shape[0], np.int64)))
            cnt = np.concatenate((cnt, np.ones(missing.shape[0], np.int64)))
        order = engine.lex_sorted(Pieces(pool, off, ln, cnt, None), np.arange(ln.shape[0], dtype=np.int64))
        pool, offsets = gather_pieces(pool, off, ln, order)
        return pool, offsets[:-1], ln[order], cnt[order]


def count_pieces(trainer, corpus, engine, ngrams, budget, tmp, progress, work=None, cluster=None):
    """The second pass: segment with the n-gram model and count the distinct pieces.

    Pieces of up to 7 bytes are counted as packed keys (sorted runs merged by
    a :class:`~.runs.RunStore`), longer ones by a
    :class:`~.piece_store.LongPieceStore`; both spill to ``tmp()`` past
    their share (``config.TRAIN_LONG_PIECE_SHARE``) of ``budget`` less the
    n-gram table (a quarter of ``budget`` at least). Merged,
    the pieces pruning keeps (bytes never seen get count 1) stay in memory
    and the others go to :class:`~.piece_store.DroppedPieces` (on disk past
    a share of ``budget``). ``trainer.stats`` gets the pass's figures. With
    a work folder ``work`` the finished counts are loaded (``pieces.npz``),
    or the pass continues after its last checkpoint. With ``cluster`` (:class:`~.ray.RayPasses`) the
    Viterbi and the batches' piece runs are computed on Ray actors, and
    reduced here.

    Returns
    -------
    Pieces
    """
    if work is not None and work.exists("pieces.json"):
        a = work.load_arrays("pieces.npz")
        trainer.stats.update(work.load_json("pieces.json"))
        trainer.stats.setdefault("resumed", {})["pieces"] = True
        return Pieces(a["pool"], a["off"], a["ln"], a["cnt"], DroppedPieces.on_disk(lambda: work.path))
    # the n-gram table the Viterbi reads takes its part of the budget (its pages are resident, mapped or not)
    budget = max(budget // 4, budget - int(ngrams.ht.nbytes))
    share = budget // config.TRAIN_LONG_PIECE_SHARE
    short = RunStore(budget - share, tmp, "pieces")
    long = LongPieceStore(engine, share, tmp)
    ckpt = PassCheckpoints(work, "pass2", [short, long], corpus)
    trainer.stats.setdefault("resumed", {})["pass2_batches"] = ckpt.skip
    bar = progress_bar(progress and not ckpt.complete, desc="Count Pieces", unit="B", unit_scale=True,
                       total=corpus.total_bytes)
    batches = corpus.numbered(corpus.second_pass(ckpt.skip)) if not ckpt.complete else ()
    if cluster is None:
        viterbi = engine.viterbi(ngrams) if not ckpt.complete else None

        def count(data, offsets):
            seg_start, seg_end = engine.segments(data, offsets)
            flags = viterbi(data, seg_start, seg_end)
            keys, counts, long.table = engine.count_pieces(data, flags, seg_start, seg_end, long.table)
            short.add(keys, counts)
            long.after_batch()
    else:
        batches = cluster.count_pieces(batches, ngrams)

        def count(result):  # the long pieces' bytes, end to end, stand for the batch
            keys, counts, long_bytes, long_at, long_len = result
            long.table = engine.add_long_pieces(long_bytes, long_at, long_len, long.table)
            short.add(keys, counts)
            long.after_batch()

    counted = ckpt.run(batches, bar, count)
    trainer.stats.setdefault("batches_counted", {})["pass2"] = counted
    # every distinct piece once: short ones (packed keys), then long ones
    dropped = DroppedPieces(tmp, share, persist=work is not None)
    sorter = _Sorter(trainer, dropped)
    step = config.TRAIN_SORT_STEP
    for keys, cnt in short.blocks(remove=work is None):
        for a in range(0, keys.shape[0], step):
            sorter.add(*unpack_keys(keys[a:a + step]), cnt[a:a + step])
    for pool, off, ln, cnt in long.blocks(remove=work is None):
        for a in range(0, ln.shape[0], step):
            sorter.add(pool, off[a:a + step], ln[a:a + step], cnt[a:a + step])
    dropped.finish()
    pool, off, ln, cnt = sorter.kept(engine)
    trainer.stats.update(n_pieces_counted=int(cnt.shape[0]) + dropped.n, n_piece_spills=short.n_spilled,
                         n_long_piece_spills=long.n_spilled, pieces_dropped_on_disk=dropped.on_disk_now)
    if work is not None:
        work.save_arrays("pieces.npz", pool=pool, off=off, ln=ln, cnt=cnt)
        work.save_json("pieces.json", {k: trainer.stats[k] for k in (
            "n_pieces_counted", "n_piece_spills", "n_long_piece_spills", "pieces_dropped_on_disk")})
        ckpt.done()
        work.remove("texts.bin")
    return Pieces(pool, off, ln, cnt, dropped)


def prune_pieces(trainer, pieces, engine, progress, work=None, cluster=None):
    """The reference's piece pruning, once per vocabulary size (largest first).

    Pieces longer than ``max_piece_length`` or below ``min_count`` (bytes
    excepted) are split by the Unigram tokenizer of the kept ones, wasted
    pieces are dropped until the set is stable, then the set is cut to each
    size in ``trainer.max_vocab_size`` the same way. With a work folder
    ``work`` the state after each re-tokenization round is checkpointed
    (``prune.npz``) and a rerun continues from it. With ``cluster`` (a
    :class:`~.ray.RayPasses`) each round's splits run on its actors.

    Returns
    -------
    list of (idx, counts)
        Per size: kept piece indices (in byte order) and their counts.
    """
    bar = progress_bar(progress, desc="Prune Pieces", unit=" splits")
    on = engine if cluster is None else cluster
    trainer.stats["seconds_prune_splits"] = 0.0

    def split(*args):
        """``on.split``, timed: the splits are the part of pruning a cluster spreads."""
        t0 = time.perf_counter()
        try:
            return on.split(*args)
        finally:
            trainer.stats["seconds_prune_splits"] += time.perf_counter() - t0

    ln, cnt, rank = pieces.ln, pieces.cnt, pieces.rank
    K = rank  # the kept pieces, in byte order (the trie wants it)
    sizes = trainer.max_vocab_size
    trainer.stats["pieces_kept_by_min_count"] = int(K.shape[0])
    # the state: phase (0: first wasted loop, 1: cut to size i, 2: wasted loop after a cut), i, K, cK, out
    saved = work.load_arrays("prune.npz") if work is not None else None
    if saved is not None:
        rounds, phase, i, stable = (int(x) for x in saved["state"])
        K, cK = saved["K"], saved["cK"]
        out = [(saved[f"K{j}"], saved[f"c{j}"]) for j in range(i)]
        trainer.stats.setdefault("resumed", {})["prune_rounds"] = rounds
    else:
        cK = cnt + split(pieces, K, cnt, pieces.dropped.batches(config.TRAIN_SPLIT_BATCH_BYTES))
        rounds, phase, i, out, stable = 1, 0, 0, [], -1
        _prune_checkpoint(work, (rounds, phase, i, stable), K, cK, out)
    pieces.dropped.remove()
    bar.update(rounds)
    split_bytes = config.TRAIN_SPLIT_BATCH_BYTES
    while i < len(sizes):
        if phase == 1:
            size = sizes[i]
            if K.shape[0] <= size - 3:
                out.append((K, cK))
                i += 1
                continue
            order = np.lexsort((rank[K], -ln[K], -cK, (ln[K] > 1).astype(np.int8)))
            top = np.sort(order[: size - 3])  # K is in byte order: so is K[sorted positions]
            rest = order[size - 3:]
            K2, c2 = K[top], cK[top]
            K, cK = K2, c2 + split(pieces, K2, c2, pieces.batches(K[rest], cK[rest], split_bytes))
            phase = 2
        else:  # a round of dropping wasted pieces: re-tokenize the kept pieces with their own tokenizer
            res = split(pieces, K, cK, pieces.batches(K, cK, split_bytes))
            m = res > 0
            if m.all():
                if phase == 2:
                    out.append((K, res))
                    i += 1
                else:
                    stable = int(K.shape[0])
                K, cK, phase = K, res, 1
            else:
                K, cK = K[m], res[m]
        rounds += 1
        bar.update(1)
        _prune_checkpoint(work, (rounds, phase, i, stable), K, cK, out)
    trainer.stats["pieces_before_cut"] = stable
    bar.close()
    return out


def _prune_checkpoint(work, state, K, cK, out):
    kill_point("prune", state[0])
    if work is not None:
        arrays = {f"{x}{j}": a for j, (k, c) in enumerate(out) for x, a in (("K", k), ("c", c))}
        work.save_arrays("prune.npz", state=np.array(state, np.int64), K=K, cK=cK, **arrays)
