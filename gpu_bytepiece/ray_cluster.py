"""Ray, shared by the pipeline (``encode --ray``) and the trainer (``train --ray``).

Start or attach a Ray (:func:`init_ray`), and size the actors of a job
(:func:`actor_plan`: one per GPU when the cluster has GPUs and the device
allows them, else one per ``threads`` CPUs). Importing this module does not
import Ray (its functions do); it imports only :mod:`gpu_bytepiece.device`.
"""

from __future__ import annotations

import socket

from .device import cluster_device

__all__ = ["RayError", "import_ray", "check_address", "init_ray", "actor_plan", "LOCAL_ADDRESSES"]

#: ``--ray`` values that start (or attach to) a Ray on this machine.
LOCAL_ADDRESSES = (None, "", "auto", "local")
#: Seconds :func:`init_ray` waits for a cluster's address to answer before saying it cannot be reached.
CONNECT_TIMEOUT_S = 5.0
_DEFAULT_PORT = 6379


class RayError(RuntimeError):
    """Ray is not installed, or the cluster asked for cannot be reached."""


def import_ray():
    """The ``ray`` module, or :class:`RayError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayError("Ray is not installed: pip install 'gpu-bytepiece[ray]'") from None
    return ray


def _host_port(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` or ``ray://host:port`` (Ray's default port when none)."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep:
        return rest.rstrip("/"), _DEFAULT_PORT
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise RayError(f"--ray {address!r}: expected HOST:PORT (or ray://HOST:PORT)") from None


def check_address(address: str | None) -> None:
    """:class:`RayError` at once when a cluster's ``address`` does not answer (a TCP
    connection, ``CONNECT_TIMEOUT_S``): Ray itself retries an unreachable address for
    minutes. Local addresses (``LOCAL_ADDRESSES``) pass."""
    if address in LOCAL_ADDRESSES:
        return
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise RayError(f"cannot reach a Ray cluster at {address!r} ({host}:{port}: {why}); give the head "
                       "node's HOST:PORT (ray start --head prints it), or --ray alone for a local Ray") from None


def init_ray(address: str | None):
    """The ``ray`` module, initialized: attached to ``address``, or a local Ray.

    ``None``, ``''``, ``'auto'`` and ``'local'`` start a local Ray (or attach
    to the one ``RAY_ADDRESS`` names, as ``ray.init()`` does). Another
    address is checked first (:func:`check_address`). A Ray already
    initialized in this process is used as it is.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if address in LOCAL_ADDRESSES:
        ray.init(include_dashboard=False, log_to_driver=False)
        return ray
    check_address(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as e:  # Ray's own errors: one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RayError(f"cannot attach to the Ray cluster at {address!r}: {first}") from None
    return ray


def actor_plan(ray, device: str | None, workers: int | None, threads: int | None) -> tuple[bool, int]:
    """``(gpu, n_actors)`` for a job on the initialized ``ray``.

    ``gpu``: each actor gets one GPU (:func:`~gpu_bytepiece.device.cluster_device`
    on the cluster's GPU count). ``n_actors``: ``workers`` when set, else one
    per GPU, or one per ``threads`` (default 1) of the cluster's CPUs.
    :class:`RayError` when GPUs are asked for and the cluster has none.
    """
    res = ray.cluster_resources()
    gpu = cluster_device(device, int(res.get("GPU", 0))) == "cuda"
    if gpu and not res.get("GPU", 0):  # actors asking for a GPU would wait for one forever
        raise RayError(f"device {device!r} asks for a GPU per Ray actor, but the Ray cluster has no GPUs; "
                       "use device 'cpu' or 'auto'")
    if workers:
        return gpu, int(workers)
    if gpu:
        return gpu, max(1, int(res.get("GPU", 0)))
    return gpu, max(1, int(res.get("CPU", 1)) // (threads or 1))
