"""Running an encode job: plan, resume, encode shards in workers, assemble.

Layout of a job writing ``--output PREFIX``:

- ``PREFIX.manifest.json``: inputs, parameters, shards, finished shards
  (:mod:`~gpu_bytepiece.pipeline.manifest`);
- ``PREFIX.shards/NNNNNN.*``: one dataset per finished shard (each written
  under a temporary name, fsync'd and renamed when complete);
- ``PREFIX.lock``: held (``flock``) while a job runs, so two jobs never write
  the same output;
- the dataset itself (``PREFIX.bin``/``.idx``, ...), joined from the shards in
  shard order once all are done; the shard folder is then removed
  (``keep_shards`` keeps it).

A job killed at any moment and run again with the same arguments skips the
finished shards and ends with the same bytes as an uninterrupted run: shards
are cut from the inputs alone, a shard's bytes depend only on its documents,
and the dataset is joined in shard order. Worker count, device and batch size
never change the output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from .. import _gc
from .errors import DataError, JobConflict, PipelineError
from .manifest import Manifest
from .readers import ShardStats, discover_inputs, iter_shard, plan_shards, sniff_stdin
from .writers import FORMATS, jsonl_lines, merge_datasets, output_files, shard_writer, _OpenDocs

log = logging.getLogger("gpu_bytepiece.pipeline")

__all__ = ["EncodeOptions", "encode", "encode_shard", "JobContext", "DEFAULT_SHARD_BYTES", "TEST_SLEEP_ENV"]

#: Largest default shard, in input bytes (a byte range of a big line file, or
#: a group of small files). The default is the inputs' total / 64, within
#: [MIN_AUTO_SHARD_BYTES, DEFAULT_SHARD_BYTES] (8-64 MiB), so small jobs still spread over
#: workers. Part of the job's parameters: it fixes the shards.
DEFAULT_SHARD_BYTES = 64 << 20
MIN_AUTO_SHARD_BYTES = 8 << 20


def auto_shard_bytes(inputs) -> int:
    total = sum(i.size for i in inputs)
    return int(min(DEFAULT_SHARD_BYTES, max(MIN_AUTO_SHARD_BYTES, -(-total // 64))))

#: TEST ONLY: seconds to sleep after each batch a shard writes, so that tests
#: can kill a job in the middle (documented in tests/test_pipeline_resume.py).
TEST_SLEEP_ENV = "GPU_BYTEPIECE_TEST_SLEEP_PER_BATCH"

_SUFFIX_FORMATS = {".bin": "megatron", ".idx": "megatron", ".npy": "npy", ".parquet": "parquet",
                   ".jsonl": "jsonl"}


@dataclass
class EncodeOptions:
    """What ``gpu-bytepiece encode`` is asked to do (see ``gpu-bytepiece encode --help``)."""

    inputs: list
    output: str
    format: str | None = None
    text_key: str = "text"
    input_format: str = "auto"
    split_lines: bool = False
    model: str | None = None
    device: str = "auto"
    workers: int | None = None
    batch_bytes: int | None = None
    shard_bytes: int | None = None
    add_bos: bool = False
    append_eos: bool = False
    alpha: float = -1.0
    seed: int | None = None
    on_error: str = "fail"
    overwrite: bool = False
    keep_shards: bool = False
    progress: bool | None = None
    ray: str | None = None
    threads: int | None = None


@dataclass
class JobContext:
    """What a worker needs to encode any shard of a job (picklable)."""

    inputs: list
    params: dict
    on_error: str
    shard_dir: str
    fmt: str
    vocab_size: int
    schema: object = None
    text_key: str = "text"
    batch_bytes: int = 16 << 20
    extra: dict = field(default_factory=dict)

    @property
    def read_params(self) -> dict:
        return {"text_key": self.text_key, "split_lines": self.params["split_lines"],
                "batch_bytes": self.batch_bytes}


# ------------------------------------------------------------------ encoding
def _stream_key(seed: int, shard_index: int) -> int:
    h = hashlib.blake2b(f"gpu-bytepiece:{seed}:{shard_index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little")


def add_specials(ids, offsets, bos_mask, eos_mask):
    """Insert ``<bos>`` (1) / ``<eos>`` (2) around the pieces flagged."""
    n = len(offsets) - 1
    counts = np.diff(offsets)
    bos = bos_mask.astype(np.int64)
    eos = eos_mask.astype(np.int64)
    new_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts + bos + eos, out=new_off[1:])
    out = np.empty(int(new_off[-1]), dtype=np.uint32)
    shift = np.repeat(new_off[:-1] + bos - offsets[:-1], counts)
    out[np.arange(len(ids), dtype=np.int64) + shift] = ids
    out[new_off[:-1][bos_mask]] = 1
    out[new_off[1:][eos_mask] - 1] = 2
    return out, new_off


class _Encoder:
    """Tokenizes a shard's batches; sampling keys follow the piece's rank in the shard."""

    def __init__(self, tok, params: dict, shard_index: int):
        self.tok = tok
        self.alpha = float(params["alpha"])
        self.bos = bool(params["add_bos"])
        self.eos = bool(params["append_eos"])
        self.stream = None if self.alpha < 0 else _stream_key(int(params["seed"]), shard_index)
        self.count = 0

    def __call__(self, batch):
        from ..text import pack_texts

        whole = batch.starts is None
        data, doc_off = pack_texts(batch.texts)
        n = len(doc_off) - 1
        bos, eos = (self.bos, self.eos) if whole else (False, False)
        ids, offsets = self.tok.encode_packed(data, doc_off, add_bos=bos, add_eos=eos, alpha=self.alpha,
                                              sample_stream=self.stream, first_index=self.count)
        self.count += n
        table = batch.table
        if not whole:
            if self.bos or self.eos:
                ids, offsets = add_specials(ids, offsets, batch.starts & self.bos, batch.ends & self.eos)
            ids, offsets, table = _join_pieces(batch, ids, offsets)
        return ids, offsets, table, len(data)


def _join_pieces(batch, ids, offsets):
    """Pieces of a batch -> documents (the first may continue, the last stay open)."""
    n = len(offsets) - 1
    keep = batch.starts.copy()
    keep[0] = True
    bounds = np.concatenate((np.flatnonzero(keep), [n]))
    table = batch.table
    if table is not None and len(bounds) - 1 != n:
        import pyarrow as pa

        name = table.column_names[0]
        texts = table.column(name).to_pylist()
        joined = ["".join(texts[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        table = pa.table({name: pa.array(joined, table.schema.field(name).type)})
    return ids, offsets[bounds], table


def shard_prefix(shard_dir: str, index: int) -> str:
    return os.path.join(shard_dir, f"{index:06d}")


def encode_shard(ctx: JobContext, shard: dict, tok, progress=None) -> dict:
    """Encode one shard into its own dataset under ``ctx.shard_dir``.

    ``progress(input_bytes, docs, tokens)`` is called after each batch.
    Returns the manifest record of the shard. Raises :class:`DataError` for a
    bad record under ``on_error='fail'``.
    """
    stats = ShardStats()
    writer = shard_writer(ctx.fmt, shard_prefix(ctx.shard_dir, shard["index"]), vocab_size=ctx.vocab_size,
                          schema=ctx.schema, text_key=ctx.text_key)
    enc = _Encoder(tok, ctx.params, shard["index"])
    sleep = float(os.environ.get(TEST_SLEEP_ENV, "0") or 0)
    text_bytes = input_bytes = 0
    try:
        for batch in iter_shard(ctx.inputs, shard, ctx.read_params, ctx.on_error, stats,
                                want_table=ctx.fmt == "parquet"):
            if batch.abort_open:
                writer.abort_open()
            docs0, tokens0 = writer.docs, writer.tokens
            if len(batch):
                ids, offsets, table, nbytes = enc(batch)
                writer.write(ids, offsets, table=table, first_continues=batch.first_continues,
                             last_open=batch.last_open)
                text_bytes += nbytes
            input_bytes += batch.input_bytes
            if progress is not None:
                progress(batch.input_bytes, writer.docs - docs0, writer.tokens - tokens0)
            if sleep:
                time.sleep(sleep)
        files = writer.close()
    except BaseException:
        writer.discard()
        raise
    return {
        "files": files,
        "docs": writer.docs,
        "tokens": writer.tokens,
        "text_bytes": text_bytes,
        "input_bytes": input_bytes,
        "blank_lines": stats.blank_lines,
        "skipped": dict(sorted(stats.skipped.items())),
        "samples": stats.samples,
    }


# ------------------------------------------------------------------ workers
def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (a killed job leaves no orphans)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - not Linux
        pass


def _load_tokenizer(model, device: str, threads: int | None):
    import numba

    from ..tokenizer import Tokenizer

    if threads:
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    tok = Tokenizer(model, device=device)
    _gc.release()  # the job has started (a no-op in worker processes)
    return tok


#: A tokenizer loaded by the parent before forking CPU workers (see _run_local).
_PRELOADED = None


def _worker_main(wid: int, ctx: JobContext, model, device: str, threads, tasks, results) -> None:
    _die_with_parent()
    try:
        if _PRELOADED is not None:
            import numba

            tok = _PRELOADED
            if threads:  # first parallel call happens here, in the child
                numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
        else:
            tok = _load_tokenizer(model, device, threads)
    except BaseException:
        results.put(("failed", wid, None, "error", traceback.format_exc()))
        return
    results.put(("ready", wid, None))
    while True:
        shard = tasks.get()
        if shard is None:
            return
        results.put(("start", wid, shard["index"]))
        try:
            rec = encode_shard(ctx, shard, tok,
                               progress=lambda b, d, t: results.put(("progress", wid, None, b, d, t)))
        except DataError as e:
            results.put(("failed", wid, shard["index"], "data", e.to_dict()))
            return
        except BaseException:
            results.put(("failed", wid, shard["index"], "error", traceback.format_exc()))
            return
        results.put(("done", wid, shard["index"], rec))


class _ShardFailed(Exception):
    def __init__(self, shard_index, kind, payload):
        self.shard_index, self.kind, self.payload = shard_index, kind, payload
        super().__init__(str(payload))


def _can_fork(devices) -> bool:
    """CPU workers on Linux are forked from a parent that has loaded the model
    (but started no Numba thread pool): no interpreter start, import and model
    load per worker. GPU workers are spawned (a CUDA context does not survive
    a fork)."""
    import multiprocessing as mp

    if not sys.platform.startswith("linux") or "fork" not in mp.get_all_start_methods():
        return False
    if any(d != "cpu" for d in devices):
        return False
    try:
        import numba.np.ufunc.parallel as _par

        return not _par._is_initialized
    except Exception:  # pragma: no cover - numba internals moved
        return False


def _run_local(ctx, shards, model, devices, threads, on_done, on_progress, loaded_model=None):
    """Encode ``shards`` in worker processes (one per entry of ``devices``)."""
    import multiprocessing as mp

    global _PRELOADED
    if _can_fork(devices):
        from ..tokenizer import Tokenizer

        _PRELOADED = Tokenizer(loaded_model if loaded_model is not None else model, device="cpu")
        mpc = mp.get_context("fork")
    else:
        mpc = mp.get_context("spawn")
    _gc.release()  # frozen before the fork: workers' collections leave the parent's objects alone
    tasks, results = mpc.Queue(), mpc.Queue()
    for s in shards:
        tasks.put(s)
    procs = []
    for wid, dev in enumerate(devices):
        tasks.put(None)
        p = mpc.Process(target=_worker_main, args=(wid, ctx, model, dev, threads, tasks, results),
                        name=f"gpu-bytepiece-worker-{wid}", daemon=True)
        p.start()
        procs.append(p)
    current = {}
    left = len(shards)
    t_start = time.monotonic()
    try:
        while left:
            try:
                msg = results.get(timeout=0.5)
            except queue.Empty:
                for wid, p in enumerate(procs):
                    if not p.is_alive() and p.exitcode not in (0, None):
                        raise _ShardFailed(current.get(wid), "error",
                                           f"worker {wid} died (exit code {p.exitcode})"
                                           + (f" while encoding shard {current[wid]}" if wid in current else ""))
                if all(not p.is_alive() for p in procs):
                    try:
                        msg = results.get(timeout=1.0)
                    except queue.Empty:
                        raise _ShardFailed(None, "error", "all workers exited before the job ended") from None
                else:
                    continue
            kind, wid, index = msg[0], msg[1], msg[2]
            if kind == "progress":
                on_progress(*msg[3:])
            elif kind == "ready":
                log.info("worker %d ready after %.2f s", wid, time.monotonic() - t_start)
            elif kind == "start":
                current[wid] = index
            elif kind == "done":
                current.pop(wid, None)
                left -= 1
                on_done(index, msg[3])
            elif kind == "failed":
                raise _ShardFailed(index, msg[3], msg[4])
    finally:
        for p in procs:
            if p.is_alive():
                if left:
                    p.kill()
                else:
                    p.join(timeout=10)
                    if p.is_alive():
                        p.kill()
        for p in procs:
            p.join(timeout=5)
        tasks.close()
        results.close()
        _PRELOADED = None


# ------------------------------------------------------------------ progress
class _Progress:
    def __init__(self, total, initial, enabled: bool):
        self.bar = None
        self.docs = 0
        self.tokens = 0
        self.t0 = time.monotonic()
        self._shown = 0.0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, initial=initial, unit="B", unit_scale=True, unit_divisor=1000,
                            desc="encode", file=sys.stderr, dynamic_ncols=True, smoothing=0.1, mininterval=0.5)

    def update(self, nbytes, docs, tokens):
        self.docs += docs
        self.tokens += tokens
        if self.bar is None:
            return
        self.bar.update(nbytes)
        now = time.monotonic()
        if now - self._shown >= 0.5:
            self._shown = now
            rate = self.tokens / max(now - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{self.docs:,} docs, {_si(rate)} tok/s", refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


# ------------------------------------------------------------------ the job
def infer_format(output: str, fmt: str | None) -> tuple[str, str]:
    """``(format, prefix)``: the format from ``--format`` or the output's suffix, the
    prefix without a suffix that names the format (``out.jsonl`` -> ``out``)."""
    if output == "-":
        fmt = fmt or "jsonl"
        if fmt != "jsonl":
            raise PipelineError(f"only jsonl can be written to standard output, not {fmt}")
        return fmt, output
    low = output.lower()
    guess = None
    for suffix in (".ids.npy", ".offsets.npy", ".bin", ".idx", ".npy", ".parquet", ".jsonl"):
        if low.endswith(suffix):
            guess = _SUFFIX_FORMATS.get(suffix, "npy")
            if fmt is None or fmt == guess:
                output = output[: -len(suffix)]
            break
    fmt = fmt or guess or "megatron"
    if fmt not in FORMATS:
        raise PipelineError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    return fmt, output


def model_identity(model) -> str:
    """sha256 of a model's pieces and counts (independent of the file's container)."""
    h = hashlib.sha256()
    for p in model.pieces:
        h.update(len(p).to_bytes(2, "little"))
        h.update(p)
    h.update(np.ascontiguousarray(model.counts, dtype="<i8").tobytes())
    return h.hexdigest()


def output_schema(inputs, text_key: str):
    """The Parquet output's schema: the inputs' columns (unified) and ``ids``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas, seen = [], set()
    for inp in inputs:
        if inp.kind == "parquet":
            s = pq.read_schema(inp.path).remove_metadata()
            if "ids" in s.names:
                raise PipelineError(f"{inp.path} already has an 'ids' column")
            key = ("parquet", s.to_string())
        elif inp.kind == "jsonl":
            s = pa.schema([(text_key, pa.string()), ("meta", pa.string())])
            key = "jsonl"
        else:
            s = pa.schema([(text_key, pa.string())])
            key = "text"
        if key not in seen:
            seen.add(key)
            schemas.append(s)
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive") if len(schemas) > 1 else schemas[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise PipelineError(f"the inputs' columns cannot be joined into one Parquet schema: {e}; "
                            "encode them separately and join with merge") from None
    return schema.append(pa.field("ids", pa.list_(pa.uint32())))


def _resolve_devices(device: str | None, workers: int | None) -> tuple[list, bool]:
    """One device string per worker (:func:`gpu_bytepiece.device.worker_devices`)."""
    from ..device import worker_devices

    try:
        devices, gpu, why = worker_devices(device, workers)
    except ValueError:
        raise PipelineError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if not gpu and (device or "auto").strip().lower() == "auto":
        log.info("encode: using the CPU: %s", why)
    return devices, gpu


def _lock(path: str):
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PipelineError(f"another job is writing this output ({path} is locked)") from None
    return fd


def _remove_outputs(prefix: str, fmt: str) -> None:
    """Delete a job's files: the dataset in ``fmt`` (and the format its manifest names)."""
    fmts = {fmt}
    try:
        with open(prefix + ".manifest.json", encoding="utf-8") as f:
            fmts.add(json.load(f)["params"]["format"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for fmt in sorted(f for f in fmts if f in FORMATS):
        for p in output_files(prefix, fmt):
            if os.path.exists(p):
                os.unlink(p)
    if os.path.isdir(prefix + ".shards"):
        shutil.rmtree(prefix + ".shards")
    if os.path.exists(prefix + ".manifest.json"):
        os.unlink(prefix + ".manifest.json")


def _clean_tmp(folder: str, stem: str = "") -> None:
    """Remove temporary files a killed job left (``NAME.tmp-PID``; only names starting with ``stem``)."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith(stem) and ".tmp-" in name:
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:  # pragma: no cover
                pass


def _totals(manifest: Manifest) -> dict:
    t = {"docs": 0, "tokens": 0, "text_bytes": 0, "input_bytes": 0, "blank_lines": 0, "skipped": {}}
    samples = []
    for k in sorted(manifest.done, key=int):
        r = manifest.done[k]
        for f in ("docs", "tokens", "text_bytes", "input_bytes", "blank_lines"):
            t[f] += r[f]
        for reason, n in r["skipped"].items():
            t["skipped"][reason] = t["skipped"].get(reason, 0) + n
        samples.extend(r["samples"][: max(0, 10 - len(samples))])
    t["skipped"] = dict(sorted(t["skipped"].items()))
    t["samples"] = samples
    return t


def encode(opts: EncodeOptions) -> dict:
    """Run an encode job (see the module notes); returns the summary.

    Raises
    ------
    DataError
        A bad record under ``on_error='fail'`` (finished shards are kept).
    JobConflict
        The output holds another job's results and ``overwrite`` is False.
    PipelineError
        Anything else that stops the job.
    """
    t0 = time.monotonic()
    if opts.on_error not in ("fail", "skip"):
        raise PipelineError(f"--on-error must be fail or skip, got {opts.on_error!r}")
    fmt, prefix = infer_format(opts.output, opts.format)
    if opts.workers is not None and opts.workers < 1:
        raise PipelineError(f"--workers must be >= 1, got {opts.workers}")
    from ..config import BATCH_BYTES
    from ..model import load_model

    batch_bytes = int(opts.batch_bytes or BATCH_BYTES)
    stdin_format = None
    if "-" in [os.fspath(i) for i in opts.inputs]:
        stdin_format = opts.input_format if opts.input_format != "auto" else sniff_stdin()
    inputs = discover_inputs(opts.inputs, opts.input_format, stdin_format)
    model = load_model(opts.model)
    params = {
        "format": fmt,
        "model_sha256": model_identity(model),
        "vocab_size": model.vocab_size,
        "text_key": opts.text_key,
        "split_lines": bool(opts.split_lines),
        "add_bos": bool(opts.add_bos),
        "append_eos": bool(opts.append_eos),
        "alpha": float(opts.alpha),
        "seed": None,
        "shard_bytes": int(opts.shard_bytes or auto_shard_bytes(inputs)),
    }
    schema = output_schema(inputs, opts.text_key) if fmt == "parquet" else None
    if schema is not None:
        params["parquet_schema"] = schema.to_string(show_schema_metadata=False)
    if params["alpha"] >= 0:
        params["seed"] = int(opts.seed) if opts.seed is not None else None
    if prefix == "-":
        return _encode_to_stdout(opts, inputs, params, model, batch_bytes, t0)

    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    lock_fd = _lock(prefix + ".lock")
    try:
        return _run_job(opts, fmt, prefix, inputs, params, model, schema, batch_bytes, t0)
    finally:
        try:  # unlinked while still held: a job that opened it meanwhile fails to lock it
            os.unlink(prefix + ".lock")
        except OSError:  # pragma: no cover
            pass
        os.close(lock_fd)


def _run_job(opts, fmt, prefix, inputs, params, model, schema, batch_bytes, t0) -> dict:
    from .. import __version__

    mpath = prefix + ".manifest.json"
    shard_dir = os.path.abspath(prefix + ".shards")
    stdin = any(i.is_stdin for i in inputs)
    finals = output_files(prefix, fmt)
    for inp in inputs:
        if any(os.path.abspath(f) == inp.path for f in finals):
            raise PipelineError(f"{inp.path} is both an input and an output file")
    if opts.overwrite:
        _remove_outputs(prefix, fmt)
    manifest = None
    if os.path.exists(mpath):
        manifest = Manifest.load(mpath)
        old = manifest.data["params"]
        if params["alpha"] >= 0 and params["seed"] is None and old.get("alpha") == params["alpha"]:
            params["seed"] = old.get("seed")  # a drawn seed is part of the job
        why = manifest.conflicts(params, inputs)
        if why:
            raise JobConflict(f"{prefix}: the output holds another job's results ({'; '.join(why)}); "
                              "use --overwrite to replace them, or another --output")
        if stdin:  # standard input cannot be checked or re-read: start that job over
            _remove_outputs(prefix, fmt)
            manifest = None
    else:
        existing = [p for p in finals if os.path.exists(p)]
        if existing or os.path.isdir(shard_dir):
            raise JobConflict(f"{existing[0] if existing else shard_dir} exists and no job manifest "
                              f"({mpath}) says what it is; use --overwrite to replace it")
    if params["alpha"] >= 0 and params["seed"] is None:
        params["seed"] = int.from_bytes(os.urandom(7), "little")
    if manifest is None:
        shards = plan_shards(inputs, params["shard_bytes"], params["split_lines"])
        manifest = Manifest.new(mpath, f"gpu-bytepiece {__version__}", params, inputs, shards)

    if manifest.data.get("complete"):
        sizes = manifest.data.get("outputs", {})
        if all(os.path.exists(p) and os.path.getsize(p) == sizes.get(os.path.basename(p)) for p in finals):
            if os.path.isdir(shard_dir) and not opts.keep_shards:
                shutil.rmtree(shard_dir)
            return _summary(manifest, prefix, fmt, t0, resumed=len(manifest.shards), ran=0, already=True)
        manifest.data["complete"] = False
    os.makedirs(shard_dir, exist_ok=True)
    _clean_tmp(shard_dir)
    _clean_tmp(os.path.dirname(os.path.abspath(prefix)), os.path.basename(prefix) + ".")
    shards = manifest.shards
    pending = [s for s in shards if not manifest.is_done(s["index"], shard_dir)]
    for s in pending:
        manifest.forget(s["index"])
    resumed = len(shards) - len(pending)
    ctx = JobContext(inputs=inputs, params=params, on_error=opts.on_error, shard_dir=shard_dir, fmt=fmt,
                     vocab_size=model.vocab_size, schema=schema, text_key=opts.text_key, batch_bytes=batch_bytes)
    log.info("encode: %d shards, %d to run (%.2f s after start)", len(shards), len(pending), time.monotonic() - t0)
    total = sum(s["bytes"] for s in shards)
    done_bytes = sum(s["bytes"] for s in shards if str(s["index"]) in manifest.done)
    show = opts.progress if opts.progress is not None else sys.stderr.isatty()
    bar = _Progress(total if not stdin else None, done_bytes, bool(show))

    def on_done(index, rec):
        manifest.mark_done(index, rec)

    try:
        if pending:
            _run_shards(opts, ctx, pending, model, bar, on_done, stdin)
    except _ShardFailed as e:
        manifest.flush()
        bar.close()
        if e.kind == "data":
            raise DataError.from_dict(e.payload) from None
        if e.shard_index is None:
            raise PipelineError(f"a worker failed: {e.payload}") from None
        raise PipelineError(f"shard {e.shard_index} failed: {e.payload}") from None
    except BaseException:
        manifest.flush()
        bar.close()
        raise
    bar.close()
    manifest.flush()
    log.info("encode: %d shards encoded %.2f s after start; joining them", len(pending), time.monotonic() - t0)
    # join the shards in order into the dataset
    sizes = merge_datasets([shard_prefix(shard_dir, s["index"]) for s in shards], prefix, fmt)
    manifest.data["complete"] = True
    manifest.data["outputs"] = sizes
    manifest.data["totals"] = {k: v for k, v in _totals(manifest).items() if k != "samples"}
    manifest.save()
    if not opts.keep_shards:
        shutil.rmtree(shard_dir, ignore_errors=True)
    log.info("encode: done %.2f s after start", time.monotonic() - t0)
    return _summary(manifest, prefix, fmt, t0, resumed=resumed, ran=len(pending), already=False)


def _run_shards(opts, ctx, pending, model, bar, on_done, stdin):
    if opts.ray is not None:
        from .ray import run_shards_ray

        _gc.release()
        run_shards_ray(ctx, pending, opts.model, opts.device, opts.workers, opts.threads, opts.ray,
                       on_done, bar.update)
        return
    devices, gpu = _resolve_devices(opts.device, opts.workers)
    n = min(len(devices), len(pending))
    if stdin or n <= 1:
        threads = opts.threads or (None if gpu else os.cpu_count())
        tok = _load_tokenizer(model, devices[0], threads)
        for s in pending:
            try:
                rec = encode_shard(ctx, s, tok, progress=bar.update)
            except DataError as e:
                raise _ShardFailed(s["index"], "data", e.to_dict()) from None
            on_done(s["index"], rec)
        return
    threads = opts.threads or max(1, (os.cpu_count() or 1) // n)
    model_arg = opts.model
    _run_local(ctx, pending, model_arg, devices[:n], threads, on_done, bar.update, loaded_model=model)


def _summary(manifest, prefix, fmt, t0, *, resumed, ran, already) -> dict:
    t = _totals(manifest)
    secs = time.monotonic() - t0
    return {
        "output": prefix,
        "format": fmt,
        "files": output_files(prefix, fmt),
        "docs": t["docs"],
        "tokens": t["tokens"],
        "text_bytes": t["text_bytes"],
        "input_bytes": t["input_bytes"],
        "bytes_per_token": t["text_bytes"] / t["tokens"] if t["tokens"] else 0.0,
        "blank_lines": t["blank_lines"],
        "skipped": t["skipped"],
        "skipped_samples": t["samples"],
        "seconds": secs,
        "shards": len(manifest.shards),
        "shards_resumed": resumed,
        "shards_run": ran,
        "already_complete": already,
        "manifest": manifest.path,
    }


class _StdoutJsonl:
    """A JSONL 'writer' streaming to standard output (no shards, no manifest)."""

    def __init__(self, out):
        self.out = out
        self.open = _OpenDocs()
        self.docs = self.tokens = 0

    def write(self, ids, offsets, *, table=None, first_continues=False, last_open=False):
        ids, offsets, _ = self.open.feed(ids, offsets, None, first_continues, last_open)
        self.out.write(jsonl_lines(ids, offsets))
        self.docs += len(offsets) - 1
        self.tokens += len(ids)

    def abort_open(self):
        self.open.abort()


def _encode_to_stdout(opts, inputs, params, model, batch_bytes, t0) -> dict:
    """``--output -``: JSONL to standard output, in order, in this process."""
    if params["alpha"] >= 0 and params["seed"] is None:
        params["seed"] = int.from_bytes(os.urandom(7), "little")
    shards = plan_shards(inputs, params["shard_bytes"], params["split_lines"])
    ctx = JobContext(inputs=inputs, params=params, on_error=opts.on_error, shard_dir="", fmt="jsonl",
                     vocab_size=model.vocab_size, text_key=opts.text_key, batch_bytes=batch_bytes)
    devices, gpu = _resolve_devices(opts.device, 1)
    tok = _load_tokenizer(model, devices[0], opts.threads or (None if gpu else os.cpu_count()))
    out = sys.stdout.buffer
    w = _StdoutJsonl(out)
    show = opts.progress if opts.progress is not None else sys.stderr.isatty()
    bar = _Progress(sum(s["bytes"] for s in shards) or None, 0, bool(show))
    totals = {"docs": 0, "tokens": 0, "text_bytes": 0, "input_bytes": 0, "blank_lines": 0, "skipped": {},
              "samples": []}
    try:
        for s in shards:
            stats = ShardStats()
            enc = _Encoder(tok, params, s["index"])
            for batch in iter_shard(inputs, s, ctx.read_params, opts.on_error, stats):
                if batch.abort_open:
                    w.abort_open()
                d0, k0 = w.docs, w.tokens
                if len(batch):
                    ids, offsets, _, nbytes = enc(batch)
                    w.write(ids, offsets, first_continues=batch.first_continues, last_open=batch.last_open)
                    totals["text_bytes"] += nbytes
                totals["input_bytes"] += batch.input_bytes
                bar.update(batch.input_bytes, w.docs - d0, w.tokens - k0)
            totals["blank_lines"] += stats.blank_lines
            for r, n in stats.skipped.items():
                totals["skipped"][r] = totals["skipped"].get(r, 0) + n
            totals["samples"].extend(stats.samples[: max(0, 10 - len(totals["samples"]))])
        out.flush()
    finally:
        bar.close()
    return {
        "output": "-", "format": "jsonl", "files": ["-"], "docs": w.docs, "tokens": w.tokens,
        "text_bytes": totals["text_bytes"], "input_bytes": totals["input_bytes"],
        "bytes_per_token": totals["text_bytes"] / w.tokens if w.tokens else 0.0,
        "blank_lines": totals["blank_lines"], "skipped": dict(sorted(totals["skipped"].items())),
        "skipped_samples": totals["samples"], "seconds": time.monotonic() - t0, "shards": len(shards),
        "shards_resumed": 0, "shards_run": len(shards), "already_complete": False, "manifest": None,
    }
