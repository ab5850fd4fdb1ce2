"""The one random number generator: splitmix64, counter-based.

Sampling draws no state: every random number is a pure function of
(document key, end position, piece length), so a seeded sample does not
depend on threads, batch or device. A document's key is
``mix64(mix64(stream_key) ^ doc_index)``, where the stream key stands for
(seed, call number).

``splitmix`` and ``uniform`` are plain scalar functions registered with
``numba.extending.register_jitable``: ``numba.njit`` code (``cpu_fallback``)
and ``numba.cuda.jit`` code (``kernels``) that call them compile them in
place (inlined: no call in the PTX), and Python calls them as they are (the
host and the CUDA simulator). ``splitmix`` is elementwise, so it also serves
numpy arrays on the host (``mix64``, ``document_keys``). The device twin of
``document_keys`` is ``kernels.layout.document_keys``.
"""

from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

__all__ = ["splitmix", "uniform", "uniform_of", "mix64", "stream_root", "document_keys"]

# splitmix64 constants
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
#: Odd multipliers that spread the end position and the piece length over 64 bits.
POS_MUL = np.uint64(0xD6E8FEB86659FD93)
LEN_MUL = np.uint64(0xA0761D6478BD642F)
_INV_2_53 = 1.0 / 9007199254740992.0


@register_jitable
def splitmix(z):
    """splitmix64's step and finalizer: ``z + golden``, then three xor-shift-multiplies.

    ``z`` is a uint64 scalar, or a uint64 numpy array on the host
    (elementwise; arithmetic wraps modulo 2**64).
    """
    z = z + GOLDEN
    z = (z ^ (z >> _S30)) * MIX1
    z = (z ^ (z >> _S27)) * MIX2
    return z ^ (z >> _S31)


@register_jitable
def uniform(key, end, length):
    """The random number in [0, 1) of the piece of ``length`` bytes ending at ``end``.

    ``key`` (uint64) is the document's key, ``end`` the piece's end as a
    byte position in its document. 53 random bits, as float64.
    """
    return uniform_of(key ^ (np.uint64(end) * POS_MUL) ^ (np.uint64(length) * LEN_MUL))


@register_jitable
def uniform_of(x):
    """``splitmix(x)``'s top 53 bits as a float64 in [0, 1): ``uniform``'s last step.

    The lattice's linear sampling form calls it with ``x`` built
    incrementally (the same number as ``uniform(key, end, length)``).
    """
    return np.float64(splitmix(x) >> _S11) * _INV_2_53


def mix64(z):
    """``splitmix`` of a uint64 array (host side)."""
    return splitmix(np.asarray(z, dtype=np.uint64))


def document_keys(stream_key: int, doc_index) -> np.ndarray:
    """Per-document random keys: ``mix64(mix64(stream_key) ^ doc_index)``.

    ``stream_key`` is a Python int (the seed, and the call number when the
    tokenizer draws fresh samples per call); ``doc_index`` an int array.

    See Also
    --------
    gpu_bytepiece.kernels.layout.document_keys : the device twin (one thread
        per document, from ``stream_root(stream_key)``).
    """
    return mix64(stream_root(stream_key) ^ np.asarray(doc_index, dtype=np.uint64))


def stream_root(stream_key: int) -> np.uint64:
    """``mix64(stream_key)`` as a uint64 scalar: what every document key of the stream starts from."""
    return mix64(np.array([stream_key & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
