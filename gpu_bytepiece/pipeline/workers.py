"""Workers of an encode job: a process per device, loading a tokenizer in each.

CPU workers on Linux are forked from a parent that has loaded the model;
GPU workers are spawned (a CUDA context does not survive a fork). Each
worker encodes whole shards (:func:`.shard.encode_shard`) and reports back
over a queue. :mod:`.ray` runs the same shards on Ray actors instead.
"""

from __future__ import annotations

import logging
import queue
import sys
import time
import traceback

from .. import _gc
from .errors import DataError, PipelineError
from .shard import JobContext, encode_shard

log = logging.getLogger("gpu_bytepiece.pipeline")

__all__ = ["ShardFailed", "load_tokenizer", "resolve_devices", "device_error", "run_local"]


class ShardFailed(Exception):
    """A shard (or a worker) failed: ``kind`` is ``'data'`` (``payload``: a
    :class:`DataError` as a dict) or ``'error'`` (``payload``: a message)."""

    def __init__(self, shard_index, kind, payload):
        self.shard_index, self.kind, self.payload = shard_index, kind, payload
        super().__init__(str(payload))


def device_error(device) -> PipelineError:
    """What a job raises for a device string :mod:`gpu_bytepiece.device` refuses."""
    return PipelineError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")


def resolve_devices(device: str | None, workers: int | None) -> tuple[list, bool]:
    """One device string per worker (:func:`gpu_bytepiece.device.worker_devices`)."""
    from ..device import worker_devices

    try:
        devices, gpu, why = worker_devices(device, workers)
    except ValueError:
        raise device_error(device) from None
    if not gpu and (device or "auto").strip().lower() == "auto":
        log.info("encode: using the CPU: %s", why)
    return devices, gpu


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (a killed job leaves no orphans)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - not Linux
        pass


def _set_threads(threads: int | None) -> None:
    """Numba's CPU threads for this process (None: leave them)."""
    from ..backends.cpu import set_numba_threads

    set_numba_threads(threads)


def load_tokenizer(model, device: str, threads: int | None, special_tokens=()):
    """A :class:`~gpu_bytepiece.Tokenizer` for a worker, an actor or the job's
    own process, with ``threads`` Numba threads and the job's special tokens."""
    from ..tokenizer import Tokenizer

    _set_threads(threads)
    tok = Tokenizer(model, device=device, special_tokens=list(special_tokens) or None)
    _gc.release()  # the job has started (a no-op in worker processes)
    return tok


#: A tokenizer loaded by the parent before forking CPU workers (see run_local).
_PRELOADED = None


def _worker_main(wid: int, ctx: JobContext, model, device: str, threads, tasks, results) -> None:
    _die_with_parent()
    try:
        if _PRELOADED is not None:
            tok = _PRELOADED
            _set_threads(threads)  # the first parallel call happens here, in the child
        else:
            tok = load_tokenizer(model, device, threads, ctx.params.get("special_tokens", ()))
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
        except PipelineError as e:  # a user-facing error: its one line, no traceback
            results.put(("failed", wid, shard["index"], "error", str(e)))
            return
        except BaseException:
            results.put(("failed", wid, shard["index"], "error", traceback.format_exc()))
            return
        results.put(("done", wid, shard["index"], rec))


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


def run_local(ctx, shards, model, devices, threads, on_done, on_progress, loaded_model=None):
    """Encode ``shards`` in worker processes (one per entry of ``devices``)."""
    import multiprocessing as mp

    global _PRELOADED
    if _can_fork(devices):
        from ..tokenizer import Tokenizer

        _PRELOADED = Tokenizer(loaded_model if loaded_model is not None else model, device="cpu",
                               special_tokens=list(ctx.params.get("special_tokens", ())) or None)
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
                        raise ShardFailed(current.get(wid), "error",
                                          f"worker {wid} died (exit code {p.exitcode})"
                                          + (f" while encoding shard {current[wid]}" if wid in current else ""))
                if all(not p.is_alive() for p in procs):
                    try:
                        msg = results.get(timeout=1.0)
                    except queue.Empty:
                        raise ShardFailed(None, "error", "all workers exited before the job ended") from None
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
                raise ShardFailed(index, msg[3], msg[4])
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
