"""The piece side of training: counting the pieces the n-gram Viterbi cuts, then pruning them."""

from __future__ import annotations

import numpy as np

from ..cpu_fallback.train_pieces import unpack_keys
from .checkpoint import PassCheckpoints, kill_point
from .progress import progress_bar
from .runs import RunStore

__all__ = ["Pieces", "count_pieces", "prune_pieces"]

#: The long-piece hash table's arrays (``engine.new_piece_table``), by name in a checkpoint.
_TABLE = ("slots", "hashes", "offsets", "lengths", "counts", "pool", "sizes")


class Pieces:
    """Distinct pieces: bytes in ``pool`` at ``off`` with ``ln``, raw ``cnt``.

    ``rank`` (set by :func:`prune_pieces`): a kept piece's place in byte
    order, -1 for the others.
    """

    def __init__(self, pool, off, ln, cnt):
        self.pool = pool
        self.off = off
        self.ln = ln
        self.cnt = cnt
        self.rank = None

    def bytes_of(self, idx):
        """The bytes of pieces ``idx``, a list of ``bytes``."""
        pool = self.pool
        return [pool[o:o + n].tobytes() for o, n in zip(self.off[idx].tolist(), self.ln[idx].tolist())]


def count_pieces(trainer, corpus, engine, ngrams, budget, tmp, progress, work=None, cluster=None):
    """The second pass: segment with the n-gram model and count the distinct pieces.

    Pieces of up to 7 bytes are counted as packed keys (sorted runs merged by
    a :class:`~.runs.RunStore`, spilled over ``budget``), longer ones in the
    engine's hash table of byte strings; bytes never seen get count 1.
    ``trainer.stats`` gets the pass's figures. With a work folder ``work``
    the finished counts are loaded (``pieces.npz``), or the pass continues
    after its last checkpoint. With ``cluster`` (:class:`~.ray.RayPasses`) the
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
        return Pieces(a["pool"], a["off"], a["ln"], a["cnt"])
    short = RunStore(budget, tmp, "pieces")
    held = {"table": None}

    def save_table(batches):
        name = f"table{batches}.npz"
        work.save_arrays(name, **dict(zip(_TABLE, held["table"])))
        return name

    ckpt = PassCheckpoints(work, "pass2", short, corpus, save_extra=save_table)
    trainer.stats.setdefault("resumed", {})["pass2_batches"] = ckpt.skip
    saved = work.load_arrays(ckpt.state["extra"]) if ckpt.skip else None
    held["table"] = tuple(saved[k] for k in _TABLE) if saved is not None else engine.new_piece_table()
    bar = progress_bar(progress and not ckpt.complete, desc="Count Pieces", unit="B", unit_scale=True,
                       total=corpus.total_bytes)
    batches = corpus.numbered(corpus.second_pass(ckpt.skip)) if not ckpt.complete else ()
    if cluster is None:
        viterbi = engine.viterbi(ngrams) if not ckpt.complete else None

        def count(data, offsets):
            seg_start, seg_end = engine.segments(data, offsets)
            flags = viterbi(data, seg_start, seg_end)
            keys, counts, held["table"] = engine.count_pieces(data, flags, seg_start, seg_end, held["table"])
            short.add(keys, counts)
    else:
        batches = cluster.count_pieces(batches, ngrams)

        def count(result):  # the long pieces' bytes, end to end, stand for the batch
            keys, counts, long_bytes, long_at, long_len = result
            held["table"] = engine.add_long_pieces(long_bytes, long_at, long_len, held["table"])
            short.add(keys, counts)

    counted = ckpt.run(batches, bar, count)
    trainer.stats.setdefault("batches_counted", {})["pass2"] = counted
    table = held.pop("table")
    # short pieces (<= 7 bytes, packed keys) then long ones (the table)
    blocks = list(short.blocks(remove=work is None)) or [(np.zeros(0, np.uint64), np.zeros(0, np.int64))]
    keys = np.concatenate([k for k, _ in blocks]) if len(blocks) != 1 else blocks[0][0]
    cnt_s = np.concatenate([c for _, c in blocks]) if len(blocks) != 1 else blocks[0][1]
    del blocks
    pool_s, off_s, ln_s = unpack_keys(keys)
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
    trainer.stats.update(n_pieces_counted=int(cnt.shape[0]), n_piece_spills=short.n_spilled)
    if work is not None:
        work.save_arrays("pieces.npz", pool=pool, off=off, ln=ln, cnt=cnt)
        work.save_json("pieces.json", {k: trainer.stats[k] for k in ("n_pieces_counted", "n_piece_spills")})
        ckpt.done()
        work.remove_orphans("table", [], ".npz")
        work.remove("texts.bin")
    return Pieces(pool, off, ln, cnt)


def prune_pieces(trainer, pieces, engine, progress, work=None):
    """The reference's piece pruning, once per vocabulary size (largest first).

    Pieces longer than ``max_piece_length`` or below ``min_count`` (bytes
    excepted) are split by the Unigram tokenizer of the kept ones, wasted
    pieces are dropped until the set is stable, then the set is cut to each
    size in ``trainer.max_vocab_size`` the same way. With a work folder
    ``work`` the state after each re-tokenization round is checkpointed
    (``prune.npz``) and a rerun continues from it.

    Returns
    -------
    list of (idx, counts)
        Per size: kept piece indices (in byte order) and their counts.
    """
    bar = progress_bar(progress, desc="Prune Pieces", unit=" splits")
    ln, cnt = pieces.ln, pieces.cnt
    keep = (ln == 1) | ((ln <= trainer.max_piece_length) & (cnt >= trainer.min_count))
    # kept pieces in byte order (the trie wants it; dropped ones need no order)
    K = engine.lex_sorted(pieces, np.flatnonzero(keep))
    rank = np.full(ln.shape[0], -1, dtype=np.int64)
    rank[K] = np.arange(K.shape[0], dtype=np.int64)
    pieces.rank = rank
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
        drop = np.flatnonzero(~keep)
        cK = cnt[K] + engine.split(pieces, K, cnt[K], drop, cnt[drop])
        rounds, phase, i, out, stable = 1, 0, 0, [], -1
        _prune_checkpoint(work, (rounds, phase, i, stable), K, cK, out)
    bar.update(rounds)
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
            K, cK = K2, c2 + engine.split(pieces, K2, c2, K[rest], cK[rest])
            phase = 2
        else:  # a round of dropping wasted pieces: re-tokenize the kept pieces with their own tokenizer
            res = engine.split(pieces, K, cK, K, cK)
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
