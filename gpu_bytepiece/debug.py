"""The command line's ``--debug``: a user error is one line; under ``--debug`` its traceback too.

The subcommands (``encode``, ``merge``, ``train``, ``export``) print a user
error as one line naming the file and the fix; each calls
:func:`debug_traceback` first, which shows the traceback only when
``--debug`` was given (:func:`enable`).
"""

from __future__ import annotations

import logging

__all__ = ["enable", "debug_traceback"]

_LOG = logging.getLogger("gpu_bytepiece")


def enable(on: bool = True) -> None:
    """``--debug`` (``on``): tracebacks of user errors (and this package's debug log) are shown."""
    _LOG.setLevel(logging.DEBUG if on else logging.NOTSET)  # this package's logger only: Numba's stay quiet


def debug_traceback() -> None:
    """Show the exception being handled with its traceback, under ``--debug`` only."""
    _LOG.debug("traceback (--debug):", exc_info=True)
