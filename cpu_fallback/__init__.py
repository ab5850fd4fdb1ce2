"""CPU twins of the GPU kernels: the shared lattice compiled with ``numba.njit``.

Installed as ``gpu_bytepiece.cpu_fallback``. Their ``cache=True`` code is
cached by ``gpu_bytepiece.jit_cache`` (content-keyed, one folder per user).
The Numba drivers load on first use (PEP 562), so that the ahead-of-time
module (:mod:`gpu_bytepiece.aot`) serves a short text without importing
Numba.
"""

from .chunks import chunk_bounds

_LAZY = ("encode_chunk", "encode_segments", "find_segments", "scatter_tokens")  # from .tokenize


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import tokenize

    value = getattr(tokenize, name)
    globals()[name] = value
    return value


__all__ = ["chunk_bounds", "encode_chunk", "encode_segments", "find_segments", "scatter_tokens"]
