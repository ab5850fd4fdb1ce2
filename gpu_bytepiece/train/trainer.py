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
   (:func:`gpu_bytepiece.core.ngram.ngram_viterbi`, one plain function
   compiled with ``numba.njit`` in ``cpu_fallback.train`` and
   ``numba.cuda.jit(device=True)`` in ``kernels.train``), and count the pieces: pieces of up to 7 bytes as
   packed keys (sorted runs, like the n-grams, spilled over the budget),
   longer ones in a hash table of byte strings (spilled over its share of
   the budget as runs sorted by hash, merged back exactly). The merged
   pieces that pruning keeps (the bytes, and those seen ``min_count`` times
   of at most ``max_piece_length`` bytes) stay in memory, the others go to
   disk past the budget.
4. **Prune pieces**: the reference's loop (split dropped pieces with the
   Unigram tokenizer of the kept ones, drop wasted pieces until the set is
   stable, cut to each size), with the shared Unigram lattice
   (``gpu_bytepiece.core.lattice``) run on each piece as one segment (raw bytes,
   as the reference's ``Tokenizer._tokenize``); the dropped pieces are read
   back from disk in batches for their one split.

Memory: one text batch, the count runs up to ``memory_budget`` (then spilled
to disk and merged back by key ranges; the log says when the long pieces and
the dropped pieces go to disk), the kept n-grams (their Viterbi table is
memory-mapped from a file when it is over ``memory_budget``, and the log
says so), and the pieces pruning keeps (those seen ``min_count`` times:
they grow with the corpus far more slowly than the distinct pieces). Texts
are read twice (a one-shot iterator is spilled to disk once). ``train`` sets glibc's mmap threshold
(see :func:`.memory.tune_malloc`).

Resumable: with ``work_dir`` (:mod:`.checkpoint`) each finished stage and the
finished batches of both corpus passes are checkpointed; a rerun after a
kill continues from them and gives the same model.

Distributed: with ``ray`` (:mod:`.ray`) the two corpus passes run as map
steps on Ray actors and are reduced here by the same code, in batch order:
the same model, and the same checkpoints.

Stages: :mod:`.corpus` (packing, two passes), :mod:`.ngrams` (1, 2),
:mod:`.pieces` (3, 4), :mod:`.runs` (merging and spilling count runs), on an
engine (:mod:`.engines`, :mod:`.cuda_engine`). Tunables are the ``TRAIN_*``
names in :mod:`gpu_bytepiece.config`.

Limits: ``order`` is 1..7 (an n-gram must fit a 64-bit key with its length).
Workers, batch sizes, memory budget and device never change the model.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time

import numpy as np

from .. import config, jit_cache
from ..backends.cpu import numba_threads
from ..core.ngram import MAX_ORDER
from ..device import cluster_device, resolve_device
from ..model import Model, model_to_json_obj, save_model
from ..sizes import parse_size
from .checkpoint import WorkDir
from .corpus import Corpus
from .engines import make_engine
from .memory import tune_malloc
from .ngrams import count_ngrams
from .pieces import count_pieces, prune_pieces

__all__ = ["Trainer", "MAX_ORDER"]


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
        if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer, float, np.floating)) \
                or not 0 <= min_count < math.inf:
            raise ValueError(f"min_count must be a finite number >= 0, got {min_count!r}")
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
              memory_budget=None, tmp_dir=None, progress=True, batch_bytes=None,
              work_dir=None, overwrite=False, ray=None):
        """Train on ``texts`` (an iterable of str, read twice or spilled once).

        Parameters
        ----------
        texts : iterable of str
            Documents. A re-iterable (list, ``pipeline.InputTexts``, ...) is read
            twice; a one-shot iterator is read once and spilled to ``tmp_dir``.
        workers : int, optional
            CPU threads (default: Numba's setting, all cores).
        batch_size : int
            Accepted for BytePiece compatibility; batches here are sized in
            bytes (``batch_bytes``). Never changes the model.
        device : {'auto', 'cpu', 'cuda', 'cuda:N'}
            Where n-gram counting, the n-gram Viterbi and the pruning's
            piece splitting run (segmenting, gathering pieces and building
            the pruning's tokenizer run on the CPU).
        memory_budget : int or str, optional
            Bytes of n-gram and piece count runs kept in memory before they
            are merged and spilled to disk (``'512M'``, ``'2G'``; default
            ``config.TRAIN_MEMORY_BUDGET``, 1 GiB).
        tmp_dir : str, optional
            Where spills go (default: the system temporary directory).
        progress : bool
            Show a progress bar per stage.
        batch_bytes : int or str, optional
            Texts are packed in batches of about this many UTF-8 bytes
            (default ``config.TRAIN_BATCH_BYTES``, 8 MiB). Never changes the
            model.
        work_dir : str, optional
            Resumable training: checkpoints of each finished stage, and of
            finished batches within the two corpus passes (every
            ``config.TRAIN_CHECKPOINT_BYTES``), go to this folder (made if
            missing), and spills too. Rerun with the same texts and
            parameters after a crash or a kill: finished work is not redone
            and the model is the same. What a finished training leaves there
            (the piece counts and the pruning's result) makes a rerun
            immediate; remove the folder when done.
        overwrite : bool
            With ``work_dir``: a folder holding another training's
            checkpoints (other parameters, other inputs) is emptied and
            started again, instead of raising ``ValueError``.
        ray : bool or str, optional
            Run both corpus passes on Ray actors (:mod:`.ray`): ``True`` (or
            ``'auto'``) starts or attaches to a local Ray, ``'HOST:PORT'``
            attaches to a cluster (an unreachable one raises
            ``RuntimeError`` at once). One actor per CPU of the cluster, or
            per GPU where it has GPUs and ``device`` allows them; ``workers``
            are then the driver's threads (pruning). The texts are read on
            this machine; the model is the same as without Ray, and a
            ``work_dir`` resumes across both.

        Returns
        -------
        Trainer
            ``self``; ``models`` (one :class:`~gpu_bytepiece.model.Model` per
            size), ``pieces`` (``{piece bytes: count}`` per size) and
            ``stats`` are set (``stats['resumed']``: what checkpoints gave;
            ``stats['batches_counted']``: batches counted by this call).

        Raises
        ------
        ValueError
            ``work_dir`` holds another training's checkpoints (and not
            ``overwrite``), or the texts differ from those checkpointed.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                    or workers < 1):
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        budget = config.TRAIN_MEMORY_BUDGET if memory_budget is None else parse_size(memory_budget, "memory_budget")
        batch_bytes = config.TRAIN_BATCH_BYTES if batch_bytes is None else parse_size(batch_bytes, "batch_bytes")
        cluster = None
        if ray is not None and ray is not False:
            from .ray import RayPasses

            cluster_device(device, 0)  # a bad device string fails here; the actors resolve it
            cluster = RayPasses(self, None if ray is True else str(ray), device)
            use_cuda, dev_index = False, 0  # the driver prunes on the CPU
        else:
            use_cuda, dev_index, _ = resolve_device(device)
        jit_cache.announce("the trainer", "cpu_fallback/train", "cpu_fallback/train_pieces")
        tmp_holder = {}

        def tmp():
            if "dir" not in tmp_holder:
                tmp_holder["dir"] = tempfile.mkdtemp(prefix="gpu-bytepiece-train-", dir=tmp_dir)
            return tmp_holder["dir"]

        corpus = Corpus(texts, batch_bytes, tmp)
        corpus.size_hint = getattr(texts, "size_hint", None)
        work = None
        if work_dir is not None:
            work = WorkDir(work_dir, self._identity(texts, corpus, batch_bytes), overwrite=overwrite)
            tmp_holder["dir"] = work.path
            tmp_holder["keep"] = True
        tune_malloc()
        self.models, self.pieces = [], []
        self.stats = {"resumed": {}, "batches_counted": {}}
        engine = None
        try:
            with numba_threads(workers):
                engine = make_engine(self, use_cuda, dev_index)
                t0 = time.perf_counter()
                ngrams = count_ngrams(self, corpus, engine, budget, tmp, progress, work, cluster)
                t1 = time.perf_counter()
                pieces = count_pieces(self, corpus, engine, ngrams, budget, tmp, progress, work, cluster)
                if cluster is not None:
                    cluster.drop_ngrams()
                del ngrams
                t2 = time.perf_counter()
                results = prune_pieces(self, pieces, engine, progress, work, cluster)
                t3 = time.perf_counter()
        finally:
            corpus.close()
            if engine is not None:
                engine.close()
            if cluster is not None:
                cluster.close()
            if "dir" in tmp_holder and "keep" not in tmp_holder:
                shutil.rmtree(tmp_holder["dir"], ignore_errors=True)
        self.stats.update(seconds_ngrams=t1 - t0, seconds_pieces=t2 - t1, seconds_prune=t3 - t2,
                          device=engine.name if cluster is None else f"{cluster.name}; pruning: ray")
        if cluster is not None:
            self.stats["n_split_batches_on_ray"] = cluster.split_batches
        for idx, counts in results:
            order = np.lexsort((pieces.rank[idx], pieces.ln[idx]))
            idx, counts = idx[order], counts[order]
            self.models.append(Model(pieces=pieces.bytes_of(idx), counts=counts.astype(np.int64),
                                     source="<trainer>"))
        self.pieces = [dict(zip(m.pieces, m.counts.tolist())) for m in self.models]
        self.stats["notes"] = self._notes()
        return self

    def _notes(self) -> list:
        """Why a model came out smaller than the size asked, one line per such model."""
        out = []
        kept, stable = self.stats.get("pieces_kept_by_min_count"), self.stats.get("pieces_before_cut")
        for size, m in zip(self.max_vocab_size, self.models):
            if m.vocab_size >= size:
                continue
            if stable + 3 < size:
                mpl = "inf" if self.max_piece_length == math.inf else self.max_piece_length
                out.append(f"{m.vocab_size} ids, fewer than the {size} asked: only {kept:,} pieces (the 256 bytes "
                           f"included) are seen at least min_count={self.min_count} times and are at most "
                           f"max_piece_length={mpl} bytes long, and {stable:,} of them survive pruning; a lower "
                           "min_count or more text gives more")
            else:
                out.append(f"{m.vocab_size} ids, fewer than the {size} asked: after the cut to {size - 3} pieces, "
                           f"{size - 3 - len(m.pieces):,} that the others' tokenization no longer uses were dropped "
                           "(as BytePiece does)")
        return out

    def _identity(self, texts, corpus, batch_bytes) -> dict:
        """What a work folder checks before resuming: parameters, batching, the inputs when known."""
        mpl = self.max_piece_length
        params = {"order": self.order, "max_vocab_size": list(self.max_vocab_size),
                  "max_piece_length": "inf" if mpl == math.inf else int(mpl), "min_count": self.min_count,
                  "isolate_digits": self.isolate_digits, "ensure_unicode": self.ensure_unicode}
        ident = getattr(texts, "identity", None)
        return {"params": params, "batch_bytes": int(batch_bytes), "one_shot": corpus.one_shot,
                "inputs": ident() if callable(ident) else None}

    # ------------------------------------------------------------ output
    def dump(self, pieces: dict) -> dict:
        """BytePiece's model mapping of ``{piece bytes: count}`` (sorted by length, bytes)."""
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
