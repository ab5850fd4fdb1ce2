"""The one device parser: ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.

The tokenizer, the trainer and the pipeline (its workers, and Ray) all read a
device string here, and probe for a usable GPU here.
"""

from __future__ import annotations

import os
import sys

__all__ = ["DeviceError", "cuda_usable", "resolve_device", "worker_devices"]


class DeviceError(RuntimeError):
    """The requested device cannot be used."""


def cuda_usable() -> tuple[bool, str]:
    """Whether a real CUDA GPU can be used, and if not, why."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False, "NUMBA_ENABLE_CUDASIM=1 (the simulator is only used when device='cuda' is asked for)"
    if sys.platform.startswith("linux") and not any(
        os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/dxg", "/proc/driver/nvidia")
    ):
        # no NVIDIA driver here: skip importing numba.cuda (~0.2 s)
        return False, "no NVIDIA driver (no /dev/nvidiactl)"
    try:
        from numba import cuda
    except Exception as e:  # numba-cuda missing or broken
        return False, f"numba-cuda is not importable ({e})"
    try:
        if not cuda.is_available():
            return False, "no CUDA driver or GPU found"
    except Exception as e:
        return False, f"CUDA is not usable ({e})"
    return True, "CUDA GPU found"


def resolve_device(device: str) -> tuple[bool, int, str]:
    """``(use_cuda, index, why)`` for ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.

    ``auto`` picks CUDA when it is usable (``why`` says why not otherwise);
    ``cuda`` without a usable GPU raises :class:`DeviceError` (under the CUDA
    simulator it is allowed, for tests).
    """
    if not isinstance(device, str):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    dev = device.strip().lower()
    if dev == "cpu":
        return False, 0, "device='cpu'"
    if dev == "auto":
        ok, why = cuda_usable()
        return ok, 0, why
    if dev == "cuda" or dev.startswith("cuda:"):
        index = 0
        if dev.startswith("cuda:"):
            try:
                index = int(dev[5:])
            except ValueError:
                raise ValueError(f"bad device {device!r}: expected 'cuda:N'") from None
        if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
            ok, why = cuda_usable()
            if not ok:
                raise DeviceError(f"device={device!r} was asked for but CUDA is not usable: {why}")
        return True, index, "asked for"
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def worker_devices(device: str | None, workers: int | None) -> tuple[list, bool, str]:
    """One device string per worker, whether they are GPUs, and why (as
    :func:`resolve_device` says it; ``None`` means ``'auto'``).

    ``auto`` and ``cuda`` give one worker per GPU (``workers`` of them when
    set, spread round-robin over the GPUs); ``cuda:N`` pins every worker to GPU
    ``N``; the CPU gives ``workers`` (default: the core count) CPU workers.
    Under the CUDA simulator ``cuda`` is allowed, for tests.
    """
    device = "auto" if device is None else device
    use_cuda, _, why = resolve_device(device)
    dev = device.strip().lower()
    if use_cuda and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and not dev.startswith("cuda:"):
        from numba import cuda

        n_gpu = len(cuda.gpus)
        n = workers or n_gpu
        return [f"cuda:{i % n_gpu}" for i in range(n)], True, why
    if use_cuda:  # cuda:N, or the simulator
        return [dev] * (workers or 1), True, why
    return ["cpu"] * (workers or os.cpu_count() or 1), False, why


def cluster_device(device: str | None, n_cluster_gpus: int) -> str:
    """``'cuda'`` or ``'cpu'``: the kind of device each actor of a cluster gets
    (Ray), for ``device`` read by :func:`resolve_device`'s rules (``None``
    means ``'auto'``).

    ``auto`` means ``cuda`` when the cluster has GPUs; ``cuda`` and ``cuda:N``
    mean one GPU per actor (the cluster places it; this machine need not have
    one); a bad string raises ``ValueError`` as everywhere.
    """
    device = "auto" if device is None else device
    if isinstance(device, str) and device.strip().lower() == "auto":
        return "cuda" if n_cluster_gpus > 0 else "cpu"
    try:
        use_cuda, _, _ = resolve_device(device)  # the one parser (ValueError for a bad string)
    except DeviceError:  # CUDA asked for and not usable here: the cluster's nodes may have it
        use_cuda = True
    return "cuda" if use_cuda else "cpu"
