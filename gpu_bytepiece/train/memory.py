"""glibc heap settings that keep the trainer's peak memory down (no-ops elsewhere).

Batches allocate and free big buffers between long-lived count runs; glibc
keeps the holes such buffers leave in its heaps, and they count in the peak
memory. :func:`tune_malloc` maps big buffers on their own and
:func:`release_memory` hands freed heap pages back.
"""

from __future__ import annotations

from .. import config

__all__ = ["release_memory", "tune_malloc"]

_TRIM = None
_MALLOC_TUNED = False


def release_memory():
    """Give freed heap pages back to the OS (glibc ``malloc_trim``; no-op elsewhere)."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


def tune_malloc():
    """Make glibc map big buffers separately, so freeing one gives it back.

    By default glibc raises its mmap threshold to the size of the largest
    buffer freed so far (up to 32 MB); after that, batch buffers come from the
    heap, where freed holes between long-lived count runs are kept: that
    fragmentation alone added ~170 MB to the peak of a 20 MB training. A fixed
    threshold (``mallopt(M_MMAP_THRESHOLD)``, ``config.TRAIN_MMAP_THRESHOLD``,
    1 MB) avoids it. This is a process-wide setting, made once, and stays
    after ``train`` returns (it only changes where glibc puts allocations of
    that size and more). No-op without glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, config.TRAIN_MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
