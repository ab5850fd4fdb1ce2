"""Where the package's compiled machine code is cached, and how it is keyed.

Numba's own ``cache=True`` keys a function on its own source file: a driver
in ``cpu_fallback/`` that inlines ``core/lattice.py`` keeps stale machine code
after an edit of ``lattice.py``, and the cache sits in ``__pycache__`` next to
the installed files (none when the install folder is read-only, cold in every
fresh environment). :func:`install` puts a cache locator in front of Numba's
for this package's files only:

- **keyed on content**: the stamp is a SHA-256 of every source file that
  compiled code comes from (``core/``, ``cpu_fallback/``, ``kernels/``,
  ``trie.py``, ``config.py``) with the Python and Numba versions, so any edit
  there recompiles everything, and the same sources find the same cache
  whatever their file times or install folder;
- **one writable folder per user**: ``$GPU_BYTEPIECE_CACHE_DIR`` when set,
  else ``$NUMBA_CACHE_DIR/gpu-bytepiece`` when that is set, else
  ``$XDG_CACHE_HOME/gpu-bytepiece`` (``~/.cache/gpu-bytepiece``); the package's
  own ``__pycache__`` only when none of those is writable. A new virtual
  environment with the same sources reuses what an earlier one compiled.
  Each content key gets its own subfolder; the few most recent are kept.
- **shipped in the wheel**: a wheel built with ``setup.py`` (``pip wheel``,
  ``python -m build --no-isolation``) carries the machine code of every path
  in ``gpu_bytepiece/_jit/<key>/`` (:mod:`gpu_bytepiece.precompile`), with the
  machine it was compiled for. When the content key and this machine (Numba's
  target triple, CPU name and features) match, the first process copies those
  files into the user's folder, so nothing compiles; elsewhere they are
  ignored and the code compiles as without them. The install folder is only
  read.

:func:`announce` prints one line to stderr when a step is about to compile
because its cache is empty ("gpu-bytepiece: compiling ... (first run only)").
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import sys
import threading
from pathlib import Path

__all__ = ["install", "cache_dir", "announce", "source_key", "machine", "load_arrays", "store_arrays",
           "SHIPPED", "MACHINE_FILE"]

#: Content-key subfolders kept in the cache folder (the newest ones).
KEEP_KEYS = 4
#: Array files kept per kind by :func:`store_arrays` (the most recently used ones).
KEEP_ARRAYS = 8

_PKG = Path(__file__).resolve().parent
#: Machine code shipped in a wheel: ``SHIPPED / <tag>`` is laid out as a user cache folder.
SHIPPED = _PKG / "_jit"
#: In a shipped ``<tag>`` folder: the machine its code was compiled for (:func:`machine`).
MACHINE_FILE = "machine.txt"
_lock = threading.Lock()
_state: dict = {}


def _source_dirs() -> list:
    """The folders whose files compiled code comes from (``cpu_fallback`` and
    ``kernels`` sit beside the package in a source checkout)."""
    dirs = [_PKG / "core"]
    for sub in ("cpu_fallback", "kernels"):
        inside = _PKG / sub
        dirs.append(inside if inside.is_dir() else _PKG.parent / sub)
    return dirs


def _source_files() -> list:
    files = [_PKG / "trie.py", _PKG / "config.py"]
    for d in _source_dirs():
        files.extend(sorted(d.glob("*.py")))
    return files


def _numba_version() -> str:
    """Numba's version, read from its installed metadata: importing Numba
    (0.3 s) is left to the code that compiles (a process served by
    ``gpu_bytepiece.aot`` never imports it). The ``dist-info`` folder beside
    the package names it (``importlib.metadata`` costs tens of ms more)."""
    import importlib.util

    spec = importlib.util.find_spec("numba")
    if spec is not None and spec.origin:
        found = list(Path(spec.origin).parent.parent.glob("numba-*.dist-info"))
        if len(found) == 1:
            return found[0].name[len("numba-"):-len(".dist-info")]
    from importlib import metadata

    try:
        return metadata.version("numba")
    except metadata.PackageNotFoundError:  # pragma: no cover - a Numba without metadata
        import numba

        return numba.__version__


def source_key() -> str:
    """SHA-256 (hex) of the compiled sources, the Python and the Numba version."""
    key = _state.get("key")
    if key is None:
        h = hashlib.sha256(f"{sys.version_info[:3]} numba {_numba_version()}".encode())
        for f in _source_files():
            h.update(f.name.encode() + b"\0")
            try:
                h.update(f.read_bytes())
            except OSError:
                pass
        key = _state["key"] = h.hexdigest()
    return key


def _tag() -> str:
    return f"{source_key()[:16]}-py{sys.version_info[0]}{sys.version_info[1]}"


def machine() -> str:
    """Numba's description of the code it generates here (target triple, CPU
    name, CPU features: the cache index's machine key), as one line."""
    from numba.core.registry import cpu_target

    return repr(cpu_target.target_context.codegen().magic_tuple())


def _seed(dest: Path) -> None:
    """Copy what a wheel ships for this content key into ``dest`` (best effort).

    Only what ``dest`` lacks: machine code only when it was compiled for this
    machine; the arrays (the bundled model's parsed pieces and trie) always.
    Each function's data files are renamed into place before its index, so a
    reader never sees an index without its data.
    """
    src = SHIPPED / dest.name
    try:
        groups = [[f] for f in sorted(src.glob("*/*.npz")) if not (dest / f.parent.name / f.name).exists()]
        code = [i for i in sorted(src.glob("*/*.nbi")) if not (dest / i.parent.name / i.name).exists()]
        if code and (src / MACHINE_FILE).read_text().strip() == machine():
            groups += [sorted(i.parent.glob(glob.escape(i.name[:-len(".nbi")]) + ".*.nbc")) + [i] for i in code]
        if not groups:
            return
        from .files import Staged

        for files in groups:
            (dest / files[0].parent.name).mkdir(parents=True, exist_ok=True)
            staged = Staged([str(dest / f.parent.name / f.name) for f in files])
            try:
                for f, tmp in zip(files, staged.tmps):
                    shutil.copyfile(f, tmp)
                staged.commit()
            except BaseException:
                staged.discard()
                raise
    except (OSError, ImportError):
        pass


def _roots() -> list:
    env = os.environ.get("GPU_BYTEPIECE_CACHE_DIR")
    if env:
        return [Path(env)]
    out = []
    numba_dir = os.environ.get("NUMBA_CACHE_DIR")
    if numba_dir:
        out.append(Path(numba_dir) / "gpu-bytepiece")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    out.append(Path(xdg) / "gpu-bytepiece")
    out.append(_PKG / "__pycache__" / "jit")
    return out


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
        return True
    except OSError:
        return False


def cache_dir() -> Path | None:
    """The folder of this content key (created), or ``None`` when nothing is writable."""
    with _lock:
        if "dir" not in _state:
            tag = _tag()
            found = None
            for root in _roots():
                fresh = not (root / tag).exists()
                if _writable(root / tag):
                    found = root / tag
                    if fresh:
                        _prune(root, keep=found)
                    if (SHIPPED / tag).is_dir():
                        _seed(found)
                    break
            _state["dir"] = found
        return _state["dir"]


def _arrays_path(kind: str, key: str) -> Path | None:
    root = cache_dir()
    return None if root is None else root / kind / f"{key[:32]}.npz"


def load_arrays(kind: str, key: str) -> dict | None:
    """The arrays :func:`store_arrays` kept under ``kind``/``key``, or ``None``.

    Data derived from inputs (a model's trie, a parsed model file), kept in
    the content-key folder beside the machine code. An unreadable file counts
    as missing: a cache never fails its caller.
    """
    import numpy as np

    path = _arrays_path(kind, key)
    if path is None:
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            got = {n: z[n] for n in z.files}
    except Exception:
        return None
    try:
        os.utime(path)  # most recently used
    except OSError:
        pass
    return got


def store_arrays(kind: str, key: str, arrays: dict) -> None:
    """Keep ``arrays`` (name -> array) under ``kind``/``key`` (atomic; best effort);
    the ``KEEP_ARRAYS`` most recently used files of ``kind`` stay."""
    import io

    import numpy as np

    from .files import write_atomic

    path = _arrays_path(kind, key)
    if path is None:
        return
    try:
        buf = io.BytesIO()
        np.savez(buf, **{n: np.asarray(v) for n, v in arrays.items()})
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, buf.getvalue())
        for old in sorted(path.parent.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP_ARRAYS:]:
            old.unlink()
    except OSError:
        pass


def _prune(root: Path, keep: Path) -> None:
    """Remove the oldest key subfolders beyond ``KEEP_KEYS`` (best effort)."""
    try:
        subs = [p for p in root.iterdir() if p.is_dir() and "-py" in p.name and p != keep]
        subs.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in subs[KEEP_KEYS - 1:]:
            shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass


def _ours(py_file: str) -> bool:
    try:
        path = Path(py_file).resolve()
    except OSError:
        return False
    return path.parent == _PKG or any(path.parent == d for d in _source_dirs())


def install() -> None:
    """Put the package's cache locator first in Numba's list (idempotent).

    Called by every module with ``cache=True`` functions before they are
    defined (``trie``, ``cpu_fallback``). Functions of other packages are
    left to Numba's own locators.
    """
    if _state.get("installed"):
        return
    from numba.core import caching

    class PackageCacheLocator(caching._CacheLocator):
        """gpu-bytepiece's files: content-keyed stamp, one writable folder (see the module)."""

        def __init__(self, py_func, py_file, path):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._path = str(path)

        def ensure_cache_path(self):
            os.makedirs(self._path, exist_ok=True)

        def get_cache_path(self):
            return self._path

        def get_source_stamp(self):
            return source_key()

        def get_disambiguator(self):
            return str(self._lineno)

        @classmethod
        def from_function(cls, py_func, py_file):
            if not _ours(py_file):
                return None
            root = cache_dir()
            if root is None:
                return None
            return cls(py_func, py_file, root / Path(py_file).parent.name)

    # CacheImpl in recent Numba (0.68 here), _CacheImpl in older ones; without either, Numba's own locators serve
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    with _lock:
        if not _state.get("installed"):
            if impl is not None:
                impl._locator_classes.insert(0, PackageCacheLocator)
                _lighter_loads(caching.Cache, PackageCacheLocator)
            _state["installed"] = True


def _lighter_loads(cache_cls, locator_cls) -> None:
    """Load this package's cached functions without refreshing Numba's registries.

    Numba's ``Cache.load_overload`` first refreshes the CPU target's typing
    and lowering registries (it imports some hundred modules: about 0.2 s, a
    third of a warm process). Loading machine code needs only the runtime
    (NRT) those functions allocate with; compiling, when the cache misses,
    refreshes the registries itself. Other packages' functions keep Numba's
    way; so does everything when Numba's internals differ from these.
    """
    numba_load = cache_cls.__dict__.get("load_overload")
    if numba_load is None or not hasattr(cache_cls, "_load_overload"):
        return

    def load_overload(self, sig, target_context):
        if not isinstance(getattr(getattr(self, "_impl", None), "locator", None), locator_cls):
            return numba_load(self, sig, target_context)
        from numba.core.runtime import rtsys

        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    load_overload.__doc__ = numba_load.__doc__
    cache_cls.load_overload = load_overload


def announce(what: str, *modules: str) -> None:
    """One stderr line when ``what`` will compile: no cached code yet for ``modules``.

    ``modules`` are source stems as ``folder/stem`` (``"cpu_fallback/tokenize"``);
    the check is whether the cache folder holds an index for any function of
    each. Said once per process and ``what``.
    """
    said = _state.setdefault("said", set())
    if what in said:
        return
    root = cache_dir()
    if root is not None:
        missing = [m for m in modules
                   if not any((root / m.split("/")[0]).glob(m.split("/")[1] + ".*.nbi"))]
        if not missing:
            return
    said.add(what)
    where = f"; cached in {root}" if root is not None else " (no writable cache folder: set GPU_BYTEPIECE_CACHE_DIR)"
    print(f"gpu-bytepiece: compiling {what} for this machine (first run only){where}", file=sys.stderr, flush=True)
