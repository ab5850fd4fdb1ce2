"""The command line's ``--debug``: a user error is one line; under ``--debug`` its traceback too.

The subcommands (``encode``, ``merge``, ``train``, ``export``) print a user
error as one line naming the file and the fix; each calls
:func:`debug_traceback` first, which shows the traceback only when
``--debug`` was given (:func:`enable`).
"""

from __future__ import annotations

import logging

__all__ = ["enable", "debug_traceback", "one_line"]

_LOG = logging.getLogger("gpu_bytepiece")


def enable(on: bool = True) -> None:
    """``--debug`` (``on``): tracebacks of user errors (and this package's debug log) are shown."""
    _LOG.setLevel(logging.DEBUG if on else logging.NOTSET)  # this package's logger only: Numba's stay quiet


def debug_traceback() -> None:
    """Show the exception being handled with its traceback, under ``--debug`` only."""
    _LOG.debug("traceback (--debug):", exc_info=True)


def one_line(err: BaseException) -> str:
    """An error's one-line message; an ``OSError`` as ``FILE: what went wrong``
    (not ``[Errno 2] No such file or directory: 'FILE'``)."""
    if isinstance(err, OSError) and err.strerror:
        where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        return f"{where}: {err.strerror}" if where else err.strerror
    return str(err)
