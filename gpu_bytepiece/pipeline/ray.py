"""Ray: tokenize a Ray Dataset, and run ``gpu-bytepiece encode`` on a cluster.

Two ways in:

- :func:`tokenize_dataset` (Ray Data): ``ds.map_batches`` with the stateful
  :class:`TokenizeBatch` actors, each keeping one loaded
  :class:`~gpu_bytepiece.Tokenizer` (one GPU per actor when the cluster has
  GPUs). Adds an ``ids`` column (``list<uint32>``)::

      import ray
      from gpu_bytepiece.pipeline.ray import tokenize_dataset
      ds = tokenize_dataset(ray.data.read_parquet("s3://bucket/docs/"), text_key="text")

- ``gpu-bytepiece encode ... --ray [ADDRESS]``: the same job as without
  ``--ray`` (same shards, manifest, resume, bytes), its shards run by
  :class:`ShardActor` s across the cluster. Inputs and the output folder
  must be on a filesystem every node sees at the same paths (NFS, Lustre, a
  single machine).

Needs ``pip install 'gpu-bytepiece[ray]'``.
"""

from __future__ import annotations

import os
import traceback

import numpy as np

from ..device import cluster_device
from ..ray_cluster import RayError, actor_plan, import_ray, init_ray
from .errors import DataError, PipelineError
from .shard import encode_shard
from .workers import ShardFailed, device_error, load_tokenizer

__all__ = ["TokenizeBatch", "tokenize_dataset", "ShardActor", "run_shards_ray"]


def _as_pipeline_error(fn, *args):
    """``fn(*args)`` (a :mod:`gpu_bytepiece.ray_cluster` function), its :class:`RayError` as a PipelineError."""
    try:
        return fn(*args)
    except RayError as e:
        raise PipelineError(str(e)) from None


class TokenizeBatch:
    """``map_batches`` callable class: one Tokenizer per actor, kept across batches.

    Parameters
    ----------
    model : str, optional
        A BytePiece model file (every node must see it); None: the bundled one.
    text_key, ids_key : str
        Input text column; output ids column (``list<uint32>``).
    device : str
        ``cpu``, ``cuda`` (this actor's GPU) or ``auto``.
    add_bos, add_eos, alpha, seed
        As :meth:`Tokenizer.encode_to_numpy`. With ``alpha >= 0`` each batch is
        sampled with the actor's own sequence (reproducible only for the same
        batches on the same actors).
    num_threads : int, optional
        Numba CPU threads of the actor.
    """

    def __init__(self, model=None, *, text_key: str = "text", ids_key: str = "ids", device: str = "auto",
                 add_bos: bool = False, add_eos: bool = False, alpha: float = -1.0, seed: int | None = None,
                 num_threads: int | None = None):
        self.tok = load_tokenizer(model, device, num_threads)
        if seed is not None:
            self.tok.set_seed(seed)
        self.text_key, self.ids_key = text_key, ids_key
        self.kw = dict(add_bos=add_bos, add_eos=add_eos, alpha=alpha)

    def __call__(self, batch):
        import pyarrow as pa

        from .writers import ids_array

        if isinstance(batch, dict):  # numpy batch format
            texts = [t if isinstance(t, (str, bytes)) else str(t) for t in batch[self.text_key]]
            ids, offsets = self.tok.encode_to_numpy(texts, **self.kw)
            out = dict(batch)
            out[self.ids_key] = np.array([ids[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)],
                                         dtype=object)
            return out
        if not isinstance(batch, pa.Table):  # pandas
            batch = pa.Table.from_pandas(batch, preserve_index=False)
        col = batch.column(self.text_key)
        ids, offsets = self.tok.encode_to_numpy(col, **self.kw)
        if self.ids_key in batch.column_names:
            batch = batch.drop_columns([self.ids_key])
        return batch.append_column(self.ids_key, ids_array(ids, offsets))


def tokenize_dataset(ds, model=None, *, text_key: str = "text", ids_key: str = "ids", device: str = "auto",
                     concurrency: int | None = None, batch_size: int | None = 1024, add_bos: bool = False,
                     add_eos: bool = False, alpha: float = -1.0, seed: int | None = None,
                     num_threads: int | None = None, **map_batches_args):
    """Add an ``ids`` column to a Ray Dataset (lazy, like every ``map_batches``).

    ``device='auto'`` puts one GPU on each actor when the cluster has GPUs
    (``concurrency`` defaults to their number), else uses CPU actors
    (``concurrency`` defaults to the cluster's CPUs over ``num_threads``).
    """
    threads = num_threads or 1
    gpu, n_actors = _as_pipeline_error(actor_plan, _as_pipeline_error(import_ray), device, None, threads)
    if concurrency is None:
        concurrency = n_actors
    ctor = dict(model=model, text_key=text_key, ids_key=ids_key, device="cuda" if gpu else "cpu",
                add_bos=add_bos, add_eos=add_eos, alpha=alpha, seed=seed, num_threads=threads)
    args = dict(batch_format="pyarrow", batch_size=batch_size, concurrency=concurrency,
                num_gpus=1 if gpu else 0, num_cpus=threads)
    args.update(map_batches_args)
    return ds.map_batches(TokenizeBatch, fn_constructor_kwargs=ctor, **args)


class ShardActor:
    """Encodes whole shards of an encode job (the Ray twin of a worker process)."""

    def __init__(self, ctx, model, device: str, threads):
        self.ctx = ctx
        self.tok = load_tokenizer(model, device, threads, ctx.params.get("special_tokens", ()))

    def run(self, shard: dict):
        try:
            return ("done", shard["index"], encode_shard(self.ctx, shard, self.tok))
        except DataError as e:
            return ("data", shard["index"], e.to_dict())
        except BaseException:
            return ("error", shard["index"], traceback.format_exc())


def run_shards_ray(ctx, pending, model, device, workers, threads, address, on_done, on_progress) -> None:
    """Run ``pending`` shards on Ray actors; ``on_done(index, record)`` as each ends."""
    try:
        cluster_device(device, 0)  # a bad string fails before Ray starts
    except ValueError:
        raise device_error(device) from None
    ray = _as_pipeline_error(init_ray, address)
    threads = threads or 1
    gpu, workers = _as_pipeline_error(actor_plan, ray, device, workers, threads)
    n = max(1, min(workers, len(pending)))
    if model is not None:
        model = os.path.abspath(model)
    cls = ray.remote(num_cpus=threads, num_gpus=1 if gpu else 0)(ShardActor)
    actors = [cls.remote(ctx, model, "cuda" if gpu else "cpu", threads) for _ in range(n)]
    todo = list(pending)
    running = {}
    try:
        for a in actors:
            if todo:
                s = todo.pop(0)
                running[a.run.remote(s)] = (a, s)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            ref = ready[0]
            actor, shard = running.pop(ref)
            try:
                kind, index, payload = ray.get(ref)
            except Exception as e:  # the actor died
                raise ShardFailed(shard["index"], "error", f"Ray actor failed: {e}") from None
            if kind != "done":
                raise ShardFailed(index, kind, payload)
            on_done(index, payload)
            on_progress(shard["bytes"], payload["docs"], payload["tokens"])
            if todo:
                s = todo.pop(0)
                running[actor.run.remote(s)] = (actor, s)
    finally:
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # pragma: no cover
                pass
