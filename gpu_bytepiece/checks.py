"""Checking the public API's arguments: the one definition of each check.

Each check returns the value in its plain Python type or raises one
documented exception: ``TypeError`` for a wrong type, ``ValueError`` for a
value out of its range (``KeyError`` for an id outside the vocabulary, as
BytePiece). Booleans are not taken as integers, nor integers as booleans.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["check_flag", "check_int", "check_alpha", "check_ids"]


def check_flag(name: str, value) -> bool:
    """``value`` as a bool; a non-bool raises ``TypeError`` (an int would be read as a count)."""
    if type(value) is bool or isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def check_int(name: str, value, low: int | None = None) -> int:
    """``value`` as an int (Python or NumPy integer, not bool); else ``TypeError``;
    below ``low``: ``ValueError``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def check_alpha(alpha) -> float:
    """``alpha`` as a finite float (Python or NumPy real, not bool); else ``ValueError``."""
    ok = isinstance(alpha, (int, float, np.integer, np.floating)) and not isinstance(alpha, (bool, np.bool_))
    if ok:
        try:
            value = float(alpha)
        except OverflowError:  # an int past float's range
            ok = False
        else:
            ok = math.isfinite(value)
    if not ok:
        raise ValueError(f"alpha must be a finite number (< 0 for the best path, >= 0 to sample), got {alpha!r}")
    return value


def check_ids(ids, vocab_size: int) -> np.ndarray:
    """``ids`` as a flat int64 array; non-integers raise ``TypeError``, ids out of range ``KeyError``."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"ids must be integers, got {type(ids).__name__}")
    try:
        a = np.asarray(ids)
    except (ValueError, OverflowError) as e:
        raise TypeError(f"ids must be a flat sequence of integers ({e})") from None
    if a.dtype == object:  # Python ints past int64, or mixed objects
        flat = a.ravel().tolist()
        for v in flat:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"ids must be integers, got {v!r}")
            if not 0 <= v < vocab_size:
                raise KeyError(f"id {v} outside 0..{vocab_size - 1}")
        return np.asarray(flat, dtype=np.int64)
    if a.size and a.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got an array of {a.dtype}")
    a = a.ravel()
    bad = (a < 0) | (a >= vocab_size)
    if bad.any():
        raise KeyError(f"id {a[bad][0]} outside 0..{vocab_size - 1}")
    return a.astype(np.int64, copy=False)
