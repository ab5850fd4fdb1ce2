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
import logging
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from .. import _gc, config
from ..checks import check_alpha, check_flag, check_int
from ..files import clean_tmp
from .datasets import merge_datasets
from .errors import DataError, JobConflict, PipelineError
from .formats import infer_format, output_files
from .inputs import discover_inputs, parquet_file, plan_shards, sniff_stdin
from .jobfiles import check_done_reads, clean_shard_dir, listed_shard_files, remove_outputs
from .manifest import Manifest
from .progress import Progress
from .shard import JobContext, encode_shard, shard_prefix
from .workers import ShardFailed, load_tokenizer, resolve_devices, run_local
from .writers import JsonlWriter

log = logging.getLogger("gpu_bytepiece.pipeline")

__all__ = ["EncodeOptions", "encode", "auto_shard_bytes", "model_identity", "output_schema"]


def auto_shard_bytes(inputs) -> int:
    """The default shard size: the inputs' total / 64, within
    [``config.MIN_AUTO_SHARD_BYTES``, ``config.DEFAULT_SHARD_BYTES``]."""
    total = sum(i.size for i in inputs)
    return int(min(config.DEFAULT_SHARD_BYTES, max(config.MIN_AUTO_SHARD_BYTES, -(-total // 64))))


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
    special_tokens: tuple = ()
    allowed_special: object = "all"
    max_record_bytes: int | None = None


# ------------------------------------------------------------------ the job
def _special_params(opts, model) -> dict:
    """The job's special tokens (``--special-token``, ``--allowed-special``):
    ids from the model's vocabulary size upwards; in the job's parameters
    only when there are some, so jobs without them keep their manifests."""
    tokens = list(opts.special_tokens or ())
    if not tokens:
        if opts.allowed_special not in ("all", None, (), []):
            raise PipelineError("--allowed-special names tokens, but no --special-token was given")
        return {}
    from ..specials import SpecialTokens

    try:
        specials = SpecialTokens(tokens, model.vocab_size)
        asked = opts.allowed_special
        asked = "all" if asked is None or asked == "all" or list(asked) == ["all"] else set(asked)
        allowed, _ = specials.resolve(asked, ())
    except (ValueError, TypeError) as e:
        raise PipelineError(f"--special-token / --allowed-special: {e}") from None
    if opts.alpha >= 0:
        raise PipelineError("--special-token with sampling (--alpha >= 0) is not supported by encode; "
                            "sample with Tokenizer.encode_to_numpy(..., allowed_special=...) instead")
    return {"special_tokens": tokens, "allowed_special": sorted(allowed),
            "vocab_size": model.vocab_size + len(tokens)}


def model_identity(model) -> str:
    """sha256 of a model's pieces and counts (independent of the file's container).

    A piece's length is 2 bytes, or ``ff ff`` and 8 bytes from 65,535 bytes
    on (the identities of models of shorter pieces are unchanged)."""
    h = hashlib.sha256()
    for p in model.pieces:
        n = len(p)
        h.update(n.to_bytes(2, "little") if n < 0xFFFF else b"\xff\xff" + n.to_bytes(8, "little"))
        h.update(p)
    h.update(np.ascontiguousarray(model.counts, dtype="<i8").tobytes())
    return h.hexdigest()


def output_schema(inputs, text_key: str):
    """The Parquet output's schema: the inputs' columns (unified) and ``ids``."""
    import pyarrow as pa

    schemas, seen = [], set()
    for inp in inputs:
        if inp.kind == "parquet":
            s = parquet_file(inp.path).schema_arrow.remove_metadata()
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


def _check_shard_bytes(shard_bytes: int, inputs) -> None:
    """Refuse a shard size below ``config.MIN_SHARD_BYTES`` or one that plans
    more than ``config.MAX_SHARDS`` shards (naming the size that works)."""
    total = sum(i.size for i in inputs)
    least = max(config.MIN_SHARD_BYTES, -(-total // config.MAX_SHARDS))
    if shard_bytes < least:
        raise PipelineError(f"--shard-bytes {shard_bytes:,} is too small for {total:,} input bytes: at least "
                            f"{least:,} (at most {config.MAX_SHARDS:,} shards of >= {config.MIN_SHARD_BYTES} "
                            "bytes); the default sizes shards by the input")


def _lock(path: str):
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PipelineError(f"another job is writing this output ({path} is locked)") from None
    return fd


def _totals(records) -> dict:
    """Sums of shard records (in shard order), and the first bad-record samples."""
    t = {"docs": 0, "tokens": 0, "text_bytes": 0, "input_bytes": 0, "blank_lines": 0, "skipped": {}}
    samples = []
    for r in records:
        for f in ("docs", "tokens", "text_bytes", "input_bytes", "blank_lines"):
            t[f] += r[f]
        for reason, n in r["skipped"].items():
            t["skipped"][reason] = t["skipped"].get(reason, 0) + n
        samples.extend(r["samples"][: max(0, 10 - len(samples))])
    t["skipped"] = dict(sorted(t["skipped"].items()))
    t["samples"] = samples
    return t


def _done_records(manifest: Manifest) -> list:
    return [manifest.done[k] for k in sorted(manifest.done, key=int)]


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
    try:
        check_alpha(opts.alpha)
        if opts.seed is not None:
            check_int("seed", opts.seed)
        check_flag("add_bos", opts.add_bos)
        check_flag("append_eos", opts.append_eos)
        if opts.max_record_bytes is not None:
            check_int("max_record_bytes", opts.max_record_bytes, 1)
    except (TypeError, ValueError) as e:
        raise PipelineError(str(e)) from None
    if opts.workers is not None and opts.workers < 1:
        raise PipelineError(f"--workers must be >= 1, got {opts.workers}")
    from ..model import load_model

    batch_bytes = int(opts.batch_bytes or config.BATCH_BYTES)
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
    _check_shard_bytes(params["shard_bytes"], inputs)
    if opts.max_record_bytes is not None:  # in the job only when given: other jobs keep their manifests
        params["max_record_bytes"] = int(opts.max_record_bytes)
    schema = output_schema(inputs, opts.text_key) if fmt == "parquet" else None
    if schema is not None:
        params["parquet_schema"] = schema.to_string(show_schema_metadata=False)
    if params["alpha"] >= 0:
        params["seed"] = int(opts.seed) if opts.seed is not None else None
    params.update(_special_params(opts, model))
    if prefix == "-":
        return _all_skipped_fails(_encode_to_stdout(opts, inputs, params, model, batch_bytes, t0))

    folder = os.path.dirname(os.path.abspath(prefix))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise PipelineError(f"{folder}: cannot create the output's folder ({e.strerror}); choose another "
                            "--output") from None
    lock_fd = _lock(prefix + ".lock")
    try:
        return _all_skipped_fails(_run_job(opts, fmt, prefix, inputs, params, model, schema, batch_bytes, t0))
    finally:
        try:  # unlinked while still held: a job that opened it meanwhile fails to lock it
            os.unlink(prefix + ".lock")
        except OSError:  # pragma: no cover
            pass
        os.close(lock_fd)


def _all_skipped_fails(summary: dict) -> dict:
    """A job that skipped every record it read fails: its empty dataset is
    almost surely a wrong ``--text-key`` or ``--input-format``."""
    if summary["docs"] or not summary["skipped"]:
        return summary
    counts = ", ".join(f"{k} {v:,}" for k, v in summary["skipped"].items())
    first = summary["skipped_samples"][0] if summary["skipped_samples"] else None
    hint = " (wrong --text-key?)" if "missing_text" in summary["skipped"] else ""
    raise PipelineError(f"every record was skipped ({counts}){hint}; e.g. {DataError.from_dict(first)}"
                        if first else f"every record was skipped ({counts}){hint}")


def _run_job(opts, fmt, prefix, inputs, params, model, schema, batch_bytes, t0) -> dict:
    from .. import __version__

    mpath = prefix + ".manifest.json"
    shard_dir = os.path.abspath(prefix + ".shards")
    stdin = any(i.is_stdin for i in inputs)
    finals = output_files(prefix, fmt)
    for inp in inputs:
        if any(os.path.abspath(f) == inp.path for f in finals + [mpath]):
            raise PipelineError(f"{inp.path} is both an input and an output file")
        if inp.path.startswith(shard_dir + os.sep):
            raise PipelineError(f"{inp.path} lies in {shard_dir}, the folder where this job keeps its shards "
                                "(and removes them); move the input or choose another --output")
    if opts.overwrite:
        remove_outputs(prefix, fmt)
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
            remove_outputs(prefix, fmt)
            manifest = None
        else:
            check_done_reads(prefix, manifest, inputs)
    else:
        existing = [p for p in finals if os.path.exists(p)]
        if (existing or os.path.isdir(shard_dir)) and not opts.overwrite:
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
            if not opts.keep_shards:
                clean_shard_dir(shard_dir, finished_too=True, listed=listed_shard_files(mpath, manifest.done))
            return _summary(manifest, prefix, fmt, t0, resumed=len(manifest.shards), ran=0, already=True)
        manifest.data["complete"] = False
    os.makedirs(shard_dir, exist_ok=True)
    foreign = clean_shard_dir(shard_dir, finished_too=False)
    if foreign:
        raise PipelineError(f"{shard_dir} holds files this tool did not write ({', '.join(foreign[:3])}"
                            f"{', ...' if len(foreign) > 3 else ''}); it is the job's own shard folder: "
                            "move them out")
    clean_tmp(finals + [mpath])
    shards = manifest.shards
    pending = [s for s in shards if not manifest.is_done(s["index"], shard_dir)]
    for s in pending:
        manifest.forget(s["index"])
    resumed = len(shards) - len(pending)
    ctx = JobContext(inputs=inputs, params=params, on_error=opts.on_error, shard_dir=shard_dir, fmt=fmt,
                     vocab_size=params["vocab_size"], schema=schema, text_key=opts.text_key, batch_bytes=batch_bytes)
    log.info("encode: %d shards, %d to run (%.2f s after start)", len(shards), len(pending), time.monotonic() - t0)
    total = sum(s["bytes"] for s in shards)
    before = _totals(_done_records(manifest))  # the shards an earlier run finished
    bar = Progress(total if not stdin else None, before["input_bytes"], opts.progress, docs=before["docs"],
                   tokens=before["tokens"])

    def on_done(index, rec):
        manifest.mark_done(index, rec)

    try:
        if pending:
            _run_shards(opts, ctx, pending, model, bar, on_done, stdin)
    except ShardFailed as e:
        manifest.flush()
        bar.close(failed=True)
        if e.kind == "data":
            raise DataError.from_dict(e.payload) from None
        if e.shard_index is None:
            raise PipelineError(f"a worker failed: {e.payload}") from None
        raise PipelineError(f"shard {e.shard_index} failed: {e.payload}") from None
    except BaseException:
        manifest.flush()
        bar.close(failed=True)
        raise
    bar.close()
    manifest.flush()
    log.info("encode: %d shards encoded %.2f s after start; joining them", len(pending), time.monotonic() - t0)
    # join the shards in order into the dataset
    join = bar.stage("join", " shards", len(shards))
    sizes = merge_datasets([shard_prefix(shard_dir, s["index"]) for s in shards], prefix, fmt)
    join.update(len(shards))
    join.close()
    manifest.data["complete"] = True
    manifest.data["outputs"] = sizes
    manifest.data["totals"] = {k: v for k, v in _totals(_done_records(manifest)).items() if k != "samples"}
    manifest.save()
    if not opts.keep_shards:
        clean_shard_dir(shard_dir, finished_too=True, listed=listed_shard_files(mpath, manifest.done))
    log.info("encode: done %.2f s after start", time.monotonic() - t0)
    return _summary(manifest, prefix, fmt, t0, resumed=resumed, ran=len(pending), already=False)


def _run_shards(opts, ctx, pending, model, bar, on_done, stdin):
    if opts.ray is not None:
        from .ray import run_shards_ray

        _gc.release()
        run_shards_ray(ctx, pending, opts.model, opts.device, opts.workers, opts.threads, opts.ray,
                       on_done, bar.update)
        return
    devices, gpu = resolve_devices(opts.device, opts.workers)
    n = min(len(devices), len(pending))
    if stdin or n <= 1:
        threads = opts.threads or (None if gpu else os.cpu_count())
        tok = load_tokenizer(model, devices[0], threads, ctx.params.get("special_tokens", ()))
        for s in pending:
            try:
                rec = encode_shard(ctx, s, tok, progress=bar.update)
            except DataError as e:
                raise ShardFailed(s["index"], "data", e.to_dict()) from None
            on_done(s["index"], rec)
        return
    threads = opts.threads or max(1, (os.cpu_count() or 1) // n)
    model_arg = opts.model
    run_local(ctx, pending, model_arg, devices[:n], threads, on_done, bar.update, loaded_model=model)


def _summary(manifest, prefix, fmt, t0, *, resumed, ran, already) -> dict:
    return _summary_dict(_totals(_done_records(manifest)), prefix, fmt, output_files(prefix, fmt), t0,
                         shards=len(manifest.shards), resumed=resumed, ran=ran, already=already,
                         manifest=manifest.path)


def _summary_dict(t, output, fmt, files, t0, *, shards, resumed, ran, already, manifest) -> dict:
    return {
        "output": output,
        "format": fmt,
        "files": files,
        "docs": t["docs"],
        "tokens": t["tokens"],
        "text_bytes": t["text_bytes"],
        "input_bytes": t["input_bytes"],
        "bytes_per_token": t["text_bytes"] / t["tokens"] if t["tokens"] else 0.0,
        "blank_lines": t["blank_lines"],
        "skipped": t["skipped"],
        "skipped_samples": t["samples"],
        "seconds": time.monotonic() - t0,
        "shards": shards,
        "shards_resumed": resumed,
        "shards_run": ran,
        "already_complete": already,
        "manifest": manifest,
    }


def _encode_to_stdout(opts, inputs, params, model, batch_bytes, t0) -> dict:
    """``--output -``: JSONL to standard output, in order, in this process
    (every shard through :func:`.shard.encode_shard`, into one writer)."""
    if params["alpha"] >= 0 and params["seed"] is None:
        params["seed"] = int.from_bytes(os.urandom(7), "little")
    shards = plan_shards(inputs, params["shard_bytes"], params["split_lines"])
    ctx = JobContext(inputs=inputs, params=params, on_error=opts.on_error, shard_dir="", fmt="jsonl",
                     vocab_size=params["vocab_size"], text_key=opts.text_key, batch_bytes=batch_bytes)
    devices, gpu = resolve_devices(opts.device, 1)
    tok = load_tokenizer(model, devices[0], opts.threads or (None if gpu else os.cpu_count()),
                         params.get("special_tokens", ()))
    writer = JsonlWriter(None, out=sys.stdout.buffer)
    bar = Progress(sum(s["bytes"] for s in shards) or None, 0, opts.progress)
    try:
        records = [encode_shard(ctx, s, tok, progress=bar.update, writer=writer) for s in shards]
        writer.close()
    except BaseException:
        bar.close(failed=True)
        raise
    bar.close()
    return _summary_dict(_totals(records), "-", "jsonl", ["-"], t0, shards=len(shards), resumed=0,
                         ran=len(shards), already=False, manifest=None)
