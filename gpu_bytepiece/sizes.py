"""The one reader of sizes in bytes (``'512M'``, ``'1.5k'``, ``'2GiB'``, ``65536``),
for the API (``Trainer.train(memory_budget=...)``) and every command line option."""

from __future__ import annotations

import numbers
import re

__all__ = ["parse_size", "size_option"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*$")
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value, name: str | None = "size") -> int:
    """Bytes from an int or a string: digits, then ``k``/``M``/``G``/``T``
    (powers of 1024), optionally ``B``/``iB``; a positive whole number of bytes.

    Raises
    ------
    ValueError
        Naming ``name`` (unless ``None``) and an example, for anything else.
    """
    what = f"{name} " if name else ""
    if isinstance(value, bool):
        raise ValueError(f"{what}must be a size in bytes, got {value!r}")
    if isinstance(value, numbers.Integral):
        n = int(value)
    elif isinstance(value, str):
        m = _SIZE.match(value)
        if not m:
            raise ValueError(f"{name + ': ' if name else ''}cannot read {value!r} as a size (e.g. 512M, 2G, 65536)")
        n = int(float(m.group(1)) * _SCALE[m.group(2).lower()])
    else:
        raise ValueError(f"{what}must be a size in bytes, got {value!r}")
    if n < 1:
        raise ValueError(f"{what}must be positive, got {value!r}")
    return n


def size_option(text: str) -> int:
    """An argparse ``type=`` for a size option: :func:`parse_size`, its error
    as argparse's (a usage message naming the option, no traceback)."""
    import argparse

    try:
        return parse_size(text, None)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
