"""Training on Ray: both corpus passes and pruning's splits on actors, reduced exactly on the driver.

``Trainer.train(..., ray=True | "HOST:PORT")`` and ``gpu-bytepiece train
--ray [ADDRESS]``. The driver reads and packs the texts into the same
batches as a single-process run (:class:`~.corpus.Corpus`) and sends each
batch to a :class:`TrainActor` (one per CPU of the cluster, or one per GPU
with ``num_gpus=1`` where the cluster has GPUs and the device allows them),
which keeps the compiled code loaded:

- pass 1: the batch's training segments and its ``(position key, count)``
  pairs, one sorted run;
- pass 2: the n-gram Viterbi (the n-gram model goes to the cluster once,
  through ``ray.put``; the actors of a node read that one copy in the
  node's object store, none copies it), the batch's short pieces as a
  sorted run and its long pieces' bytes, in order.

The driver reduces the results in batch order with the single-process code:
runs go to the same :class:`~.runs.RunStore` (exact sums), long pieces into
the same hash table, in the same order, so the model is byte-identical;
checkpoints (:mod:`.checkpoint`) are taken after the same batches, and a
work folder resumes across ``--ray`` and single-process runs.

Pruning runs its splits (re-tokenizing pieces with each round's Unigram
tokenizer) on the same actors: the driver builds the round's tokenizer,
puts it in the object store once, sends each batch of pieces to an actor
and sums the token counts it gets back (integers, so in any order the same
sums); the rest of each round (sorting, the cuts) stays on the driver.

At most ``config.TRAIN_RAY_INFLIGHT`` batches per actor are in flight (in
Ray's object store; the driver keeps no batch once sent).

Ray (start, attach, actor sizing) is :mod:`gpu_bytepiece.ray_cluster`, shared
with ``encode --ray``; importing this module does not import Ray.
"""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import numpy as np

from .. import config
from ..backends.cpu import set_numba_threads
from ..device import resolve_device
from ..ray_cluster import actor_plan, check_address, import_ray, init_ray
from ..trie import Trie
from .engines import CPUEngine, make_engine
from .ngrams import NgramModel
from .runs import RunStore

__all__ = ["TrainActor", "RayPasses"]

#: The trainer's parameters an actor needs (its engine reads them).
_PARAMS = ("order", "isolate_digits", "ensure_unicode")


def _gather(pool, off, ln):
    """The bytes of pieces ``pool[off:off + ln]``, end to end, and each one's offset there."""
    at = np.cumsum(ln) - ln
    return pool[np.arange(int(ln.sum()), dtype=np.int64) + np.repeat(off - at, ln)], at


def _writable(a):
    """``a`` as a writable C array (Ray hands out read-only views of its object store; Numba
    would compile another specialization for them)."""
    return np.require(a, requirements=("C", "W"))


class TrainActor:
    """One actor: a training engine (CPU, or this actor's GPU) kept across batches.

    Parameters
    ----------
    params : dict
        ``order``, ``isolate_digits``, ``ensure_unicode`` of the trainer.
    device : str
        ``'cpu'`` or ``'cuda'`` (the GPU Ray gave the actor).
    threads : int
        Numba CPU threads.
    """

    def __init__(self, params: dict, device: str, threads: int):
        set_numba_threads(threads)
        use_cuda, index, _ = resolve_device(device)
        self.engine = make_engine(SimpleNamespace(**params), use_cuda, index)
        self.ngrams = self.viterbi = None

    def count_keys(self, data, offsets):
        """Pass 1 of one batch: its ``(position keys, counts)``, one sorted run (merged here,
        not on the driver)."""
        data, offsets = _writable(data), _writable(offsets)
        return [RunStore.merge_all(self.engine.count_keys(data, *self.engine.segments(data, offsets)))]

    def load_ngrams(self, arrays: dict) -> None:
        """Keep the n-gram model (:meth:`NgramModel.arrays`, the table included) for pass 2.

        The arrays are kept as they come, not copied: from Ray's object store
        they are read-only views of the node's shared memory, so the actors
        of a node share one table (the Viterbi only reads it; Numba compiles
        it once more, for read-only arrays).
        """
        self.ngrams = NgramModel.from_arrays(dict(arrays))
        self.viterbi = self.engine.viterbi(self.ngrams)

    def count_pieces(self, data, offsets):
        """Pass 2 of one batch: ``(short keys, counts, long pieces' bytes, their starts there, lengths)``.

        The long pieces' bytes, end to end in the batch's order, are all the
        driver needs of the batch to add them to its table (in the same order).
        """
        data, offsets = _writable(data), _writable(offsets)
        seg_start, seg_end = self.engine.segments(data, offsets)
        flags = self.viterbi(data, seg_start, seg_end)
        keys, counts, long_start, long_len = self.engine.piece_runs(data, flags, seg_start, seg_end)
        long_bytes, long_at = _gather(data, long_start, long_len)
        return keys, counts, long_bytes, long_at, long_len

    def load_splitter(self, arrays: dict) -> None:
        """Keep a pruning round's Unigram tokenizer (``cells``, ``node_id``, ``node_score``,
        ``meta``: max piece length and piece count: what the split's lattice and backtrack read)."""
        a = {k: _writable(v) for k, v in arrays.items()}
        max_len, self.split_n = (int(x) for x in a["meta"])
        self.split_trie = Trie(base=None, check=None, node_id=a["node_id"], node_len=None,
                               cells=a["cells"], max_len=max_len)
        self.split_score = a["node_score"]

    def split(self, pool, off, ln, weights):
        """One batch of a pruning round's split: its token counts over the round's pieces."""
        batch = tuple(_writable(x) for x in (pool, off, ln, weights))
        return self.engine.split_with(self.split_trie, self.split_score, [batch], self.split_n)

    def drop_ngrams(self) -> None:
        """Let go of the n-gram model (pass 2 is over)."""
        self.ngrams = self.viterbi = None

    def close(self) -> None:
        self.engine.close()


class RayPasses:
    """The map steps of both corpus passes on Ray actors (started at the first batch).

    Parameters
    ----------
    trainer : Trainer
    address : str or None
        A Ray cluster's ``HOST:PORT`` (or ``ray://HOST:PORT``); None: a local Ray.
    device : str
        ``auto``, ``cpu``, ``cuda``: GPU actors where the cluster has GPUs and this allows them.
    """

    def __init__(self, trainer, address, device):
        import_ray()  # Ray missing, or
        check_address(address)  # an unreachable cluster, fails now, not after reading the texts
        self.params = {k: getattr(trainer, k) for k in _PARAMS}
        self.address = address
        self.device = device
        self.ray = None
        self.actors = []
        self.gpu = False
        self.n_actors = 0
        self.ngrams_ref = None
        self.split_batches = 0  # batches of pruning splits run on the actors

    @property
    def name(self) -> str:
        """What ran the passes, e.g. ``ray: 2 cpu actors`` (``ray`` before they start)."""
        if not self.n_actors:
            return "ray"
        return f"ray: {self.n_actors} {'cuda' if self.gpu else 'cpu'} actors"

    def _start(self):
        if self.ray is not None:
            return
        ray = init_ray(self.address)
        threads = 1
        self.gpu, n = actor_plan(ray, self.device, None, threads)
        cls = ray.remote(num_cpus=threads, num_gpus=1 if self.gpu else 0)(TrainActor)
        self.actors = [cls.remote(self.params, "cuda" if self.gpu else "cpu", threads) for _ in range(n)]
        self.ray, self.n_actors = ray, n  # (the actors start while the driver reads the first batches)

    def _get(self, refs, what):
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayError as e:
            lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
            raise RuntimeError(f"a Ray training actor failed {what}: {lines[-1] if lines else type(e).__name__}") \
                from None

    def _map(self, batches, method):
        """``(index, nbytes, (result,))`` in batch order for ``(index, nbytes, args)`` (``args``: the
        method's, e.g. ``(data, offsets)``)."""
        pending = deque()
        load = {}
        for index, nbytes, args in batches:
            self._start()
            if len(pending) >= config.TRAIN_RAY_INFLIGHT * len(self.actors):
                yield self._finish(pending.popleft(), load)
            actor = min(self.actors, key=lambda a: load.get(id(a), 0))
            load[id(actor)] = load.get(id(actor), 0) + 1
            ref = getattr(actor, method).remote(*args)
            pending.append((index, nbytes, ref, actor))
            del args
        while pending:
            yield self._finish(pending.popleft(), load)

    def _finish(self, item, load):
        index, nbytes, ref, actor = item
        result = self._get(ref, f"on batch {index}")
        load[id(actor)] -= 1
        if isinstance(result, np.ndarray):
            result = _writable(result)
        elif isinstance(result, tuple):
            result = tuple(_writable(a) for a in result)
        else:
            result = [tuple(_writable(a) for a in run) for run in result]
        return index, nbytes, (result,)

    def count_keys(self, batches):
        """Pass 1: ``(index, nbytes, (runs,))`` per batch, in order."""
        return self._map(batches, "count_keys")

    def count_pieces(self, batches, ngrams):
        """Pass 2: ``(index, nbytes, ((keys, counts, long bytes, long_at, long_len),))`` per batch, in order
        (:meth:`TrainActor.count_pieces`).

        ``ngrams`` (an :class:`NgramModel`) goes to every actor once, before the first batch.
        """
        def loaded():
            for item in batches:
                if self.ngrams_ref is None:
                    self._start()
                    arrays = ngrams.arrays()
                    arrays["ht"] = np.asarray(ngrams.ht)  # a memory-mapped table too
                    self.ngrams_ref = self.ray.put(arrays)
                    self._get([a.load_ngrams.remote(self.ngrams_ref) for a in self.actors], "loading the n-grams")
                yield item

        return self._map(loaded(), "count_pieces")

    def drop_ngrams(self):
        """After pass 2: the actors and the object store let go of the n-gram model."""
        if self.ngrams_ref is not None:
            self._get([a.drop_ngrams.remote() for a in self.actors], "dropping the n-grams")
            self.ngrams_ref = None

    def split(self, pieces, K, cK, batches):
        """:meth:`.engines.CPUEngine.split` with the batches spread over the actors.

        The driver builds the round's tokenizer once and puts it in the
        object store; each batch goes to an actor as its pieces' bytes alone,
        and the counts come back to be summed (integers: the same sums in
        any order, so the same pruning as on one machine).
        """
        return CPUEngine.split_lazily(self._split_with, pieces, K, cK, batches)

    def _split_with(self, trie, node_score, batches, nK):
        """:meth:`split` with the round's tokenizer built: sent once, then the batches mapped."""
        self._start()
        ref = self.ray.put({"cells": trie.cells, "node_id": trie.node_id, "node_score": node_score,
                            "meta": np.array([trie.max_len, nK], dtype=np.int64)})
        self._get([a.load_splitter.remote(ref) for a in self.actors], "loading the pruning's tokenizer")

        def items():
            for i, (pool, off, ln, w) in enumerate(batches):
                data, at = _gather(pool, off, ln)
                yield i, int(data.shape[0]), (data, at, ln, w)

        result = np.zeros(nK, dtype=np.int64)
        for _, _, (counts,) in self._map(items(), "split"):
            result += counts
            self.split_batches += 1
        return result

    def close(self):
        """Stop the actors (a Ray this process started stays up until it exits)."""
        if self.ray is not None:
            for a in self.actors:
                try:
                    self.ray.kill(a)
                except Exception:  # pragma: no cover
                    pass
        self.actors, self.ngrams_ref = [], None
