"""Fork safety: let Numba pick its TBB threading layer when ``tbb`` is installed.

Numba runs ``parallel=True`` code on one of three threading layers, chosen
once per process at the first parallel call, by default in the order TBB,
OpenMP, workqueue:

- GNU OpenMP (``omp``) is thread-safe but not fork-safe: after a process has
  run a parallel region, a forked child (``multiprocessing`` with ``fork``,
  ``datasets.map(num_proc=N)``, PyTorch ``DataLoader`` workers) dies with
  "fork() called from a process already using GNU OpenMP, this is unsafe" at
  its first parallel call, and the pool waiting for it never returns;
- ``workqueue`` is fork-safe but not thread-safe (the tokenizer's threads
  would have to take turns);
- TBB is both. The tokenizer's threads scale on it as on OpenMP.

The ``tbb`` wheel from PyPI (a dependency of gpu-bytepiece on Linux x86-64)
installs ``libtbb.so.12`` under ``sys.prefix/lib``, which the dynamic loader
does not search, so Numba's TBB layer fails to load and Numba silently falls
back to OpenMP. :func:`load_tbb` loads that library by its full path before
Numba chooses; Numba's own search (by soname) then finds it loaded and picks
TBB. An explicit ``NUMBA_THREADING_LAYER`` still decides (``omp`` gives the
old behaviour; ``tbb`` now finds its library); a process whose threading
layer is already chosen is left alone.
"""

from __future__ import annotations

import os
import sys

__all__ = ["load_tbb"]

#: The library Numba's TBB layer links, per platform (Windows has no fork).
_LIB = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib"}


def _candidates(name: str):
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        yield os.path.join(prefix, "lib", name)
    try:  # a --user or --target install: ask the distribution where its files went
        from importlib.metadata import PackageNotFoundError, files
    except ImportError:  # pragma: no cover
        return
    try:
        for f in files("tbb") or ():
            if f.name == name:
                yield str(f.locate())
    except PackageNotFoundError:
        return


def load_tbb() -> str | None:
    """Load the ``tbb`` wheel's library so that Numba can use TBB; its path, or ``None``.

    Does nothing when Numba's layer is already chosen or no TBB library is
    installed. Loading it does not choose it: ``NUMBA_THREADING_LAYER`` does,
    when set.
    """
    name = _LIB.get(sys.platform)
    if name is None:
        return None
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is not None and getattr(parallel, "_is_initialized", False):
        return None
    import ctypes

    for path in _candidates(name):
        if os.path.isfile(path):
            try:
                ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
            except OSError:  # pragma: no cover - a broken install: Numba falls back as before
                continue
            return path
    return None
