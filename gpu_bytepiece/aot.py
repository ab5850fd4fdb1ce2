"""The one-thread CPU drivers compiled ahead of time: an extension module that loads without Numba.

A process that encodes a short text with the JIT drivers imports Numba
(0.3-0.4 s) before it runs a microsecond of lattice. This module compiles
the same Python functions, ``cpu_fallback.tokenize``'s ``encode_chunk``
(which inlines ``core.lattice``'s ``lattice`` and ``backtrack``),
``_segments`` and ``scatter_tokens``, with ``numba.pycc.CC`` into
``gpu_bytepiece/_aot_cpu.<ext>``: plain machine code, no Numba
at run time. Same bodies, float64, no fastmath: the same ids as the JIT
(``tests/test_aot.py``); ``prange`` compiles as ``range`` there, so the
module only serves one thread. Its functions release the GIL while they
run, as the JIT drivers (``nogil=True``) do.
The code targets the generic CPU of the platform (no host-specific
instructions), so a wheel that ships it runs on any machine of its platform.

- ``setup.py`` builds it with the wheel (``python -m
  gpu_bytepiece.aot DIR``); without a C compiler, or when
  ``pycc`` fails (it is pending deprecation in Numba), the wheel has no
  such module and every path uses the JIT.
- :func:`load` imports it when present and built from these very sources
  (the module carries a SHA-256 of them, :func:`source_key`; a stale one is
  ignored). ``GPU_BYTEPIECE_AOT=0`` turns it off; ``GPU_BYTEPIECE_AOT=PATH``
  loads the module file at ``PATH`` instead (tests, a build kept elsewhere).
- The wrappers here check every array's dtype and layout first: pycc's
  wrappers do not (a wrong dtype would read memory as another type).

The CPU backend uses it for one-chunk work outside its threads (a short
text, ``encode``); everything else (threads, long batches, training, CUDA)
imports Numba as before.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np

__all__ = ["MODULE", "Drivers", "load", "source_key", "build"]

#: Name of the extension module (inside ``gpu_bytepiece``).
MODULE = "_aot_cpu"
_HERE = Path(__file__).resolve().parent
_state: dict = {}

_i8, _u8, _i4, _u4, _u1, _f8 = (np.dtype(t) for t in ("int64", "uint64", "int32", "uint32", "uint8", "float64"))
#: The exported functions' signatures (pycc) and, per argument, the numpy
#: dtype the wrapper checks (``None``: a scalar, converted).
_EXPORTS = {
    "encode_chunk": ("void(u1[::1], i8[::1], i8[::1], u8[::1], i8[::1], i8, i8, i8[::1], i4[::1], "
                     "f8[::1], i8, f8, u4[::1], i8[::1])",
                     (_u1, _i8, _i8, _u8, _i8, None, None, _i8, _i4, _f8, None, None, _u4, _i8)),
    "segments": ("Tuple((i8[::1], i8[::1], i8[::1]))(u1[::1], i8[::1], i8)", (_u1, _i8, None)),
    "scatter_tokens": ("void(u4[::1], i8[::1], i8[::1], i8[::1], u4[::1])", (_u4, _i8, _i8, _i8, _u4)),
}


def _sources() -> list:
    drivers = _HERE / "cpu_fallback"
    if not drivers.is_dir():  # a source checkout: cpu_fallback/ sits beside gpu_bytepiece/
        drivers = _HERE.parent / "cpu_fallback"
    core = _HERE / "core"
    return [core / "lattice.py", core / "rng.py", drivers / "tokenize.py", _HERE / "aot.py"]


def source_key() -> int:
    """The first 63 bits of a SHA-256 of the sources the module is compiled from."""
    key = _state.get("key")
    if key is None:
        h = hashlib.sha256(f"{MODULE} {sys.version_info[:2]}".encode())
        for f in _sources():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        key = _state["key"] = int.from_bytes(h.digest()[:8], "little") >> 1
    return key


def load() -> Drivers | None:
    """The compiled module's :class:`Drivers`, or ``None`` (absent, stale,
    turned off, or unloadable). Looked up once per process."""
    if "mod" in _state:
        return _state["mod"]
    mod = None
    where = os.environ.get("GPU_BYTEPIECE_AOT", "")
    if where != "0":
        try:
            if where:
                import importlib.util

                spec = importlib.util.spec_from_file_location(MODULE, where)
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
            else:
                import importlib

                mod = importlib.import_module(f"{__package__}.{MODULE}")
            mod = Drivers(mod) if int(mod.source_key()) == source_key() else None  # else: other sources
        except (ImportError, OSError, AttributeError):
            mod = None
    _state["mod"] = mod
    return mod


def _checked(name: str, args: tuple) -> tuple:
    for a, dt in zip(args, _EXPORTS[name][1]):
        if dt is not None and not (isinstance(a, np.ndarray) and a.dtype == dt and a.ndim == 1
                                   and a.flags.c_contiguous):
            raise TypeError(f"{name}: expected a C-contiguous 1-D {dt} array, got "
                            f"{getattr(a, 'dtype', type(a).__name__)}")
    return args


class Drivers:
    """The module's functions behind checking wrappers (what :func:`load` returns)."""

    def __init__(self, module):
        self.module = module

    def encode_chunk(self, data, seg_start, seg_end, seg_key, seg_pos, k0, k1,
                     cells, node_id, node_score, max_len, alpha, out, counts):
        """``cpu_fallback.tokenize.encode_chunk``, compiled ahead of time."""
        args = _checked("encode_chunk", (data, seg_start, seg_end, seg_key, seg_pos, k0, k1,
                                         cells, node_id, node_score, max_len, alpha, out, counts))
        n = len(seg_start)
        if not (len(seg_end) == len(seg_key) == len(seg_pos) == len(counts) == n and 0 <= k0 <= k1 <= n):
            raise ValueError("encode_chunk: segment arrays of different lengths, or k0..k1 outside them")
        self.module.encode_chunk(*args[:5], int(k0), int(k1), *args[7:10], int(max_len), float(alpha), *args[12:])

    def find_segments(self, data, doc_offsets):
        """``cpu_fallback.tokenize.find_segments``, compiled ahead of time."""
        data = np.ascontiguousarray(data, dtype=np.uint8)
        doc_offsets = np.ascontiguousarray(doc_offsets, dtype=np.int64)
        if len(doc_offsets) < 1 or doc_offsets[0] < 0 or doc_offsets[-1] > len(data):
            raise ValueError("find_segments: document offsets outside the data")
        cap = int(np.count_nonzero(data == 10)) + len(doc_offsets) - 1
        return self.module.segments(data, doc_offsets, cap)

    def scatter_tokens(self, out, src, counts, dest, ids):
        """``cpu_fallback.tokenize.scatter_tokens`` on one thread, compiled ahead of time."""
        self.module.scatter_tokens(*_checked("scatter_tokens", (out, src, counts, dest, ids)))


def build(out_dir) -> Path:
    """Compile the module into ``out_dir`` (needs Numba and a C compiler); its path.

    The functions are ``cpu_fallback.tokenize``'s own code objects, re-bound
    so that the lattice and backtrack they call are compiled into the module
    (``register_jitable``) rather than called through JIT dispatchers.
    """
    import types
    import warnings

    from numba.core.errors import NumbaPendingDeprecationWarning
    from numba.extending import register_jitable

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)
        from numba.pycc import CC
        from numba.pycc import compiler as pycc_compiler

    from .core import lattice as lat
    from .cpu_fallback import tokenize

    scope = dict(vars(tokenize), lattice=register_jitable(lat.lattice), backtrack=register_jitable(lat.backtrack))

    def same_code(f):
        f = getattr(f, "py_func", f)
        return types.FunctionType(f.__code__, scope, f.__name__, f.__defaults__, f.__closure__)

    key = source_key()

    def key_of_sources():
        return key

    cc = CC(MODULE, source_module=__name__)
    cc.output_dir = str(out_dir)
    cc.target_cpu = ""  # the platform's generic CPU: the wheel runs anywhere on its platform
    cc.export("source_key", "i8()")(key_of_sources)
    for name, f in (("encode_chunk", tokenize.encode_chunk), ("segments", tokenize._segments),
                    ("scatter_tokens", tokenize.scatter_tokens)):
        cc.export(name, _EXPORTS[name][0])(same_code(f))
    # pycc has no ``nogil`` option: its wrappers are made with the flags of
    # ``pycc.compiler``'s ``Flags()``, which here release the GIL around each call
    numba_flags = pycc_compiler.Flags

    class NoGilFlags(numba_flags):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.release_gil = True

    pycc_compiler.Flags = NoGilFlags
    try:
        cc.compile()
    finally:
        pycc_compiler.Flags = numba_flags
    return Path(out_dir) / cc.output_file


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m gpu_bytepiece.aot",
                                 description="Compile the one-thread CPU drivers ahead of time.")
    ap.add_argument("out_dir", nargs="?", default=str(_HERE),
                    help="where the extension module goes (default: this package's folder)")
    args = ap.parse_args(argv)
    path = build(args.out_dir)
    print(f"gpu-bytepiece: compiled {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
