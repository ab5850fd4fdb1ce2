"""The command line's garbage-collector policy (a CPython detail, CLI only).

Starting a job allocates about a million objects that live until exit
(Numba's typing and target registries, LLVM handles, the model) and no
garbage: collections during that phase traverse them for nothing, and so does
the interpreter's final collection at exit (measured: 0.03 s of imports and
0.15 s of exit on a 0.7 s job start). The CLI holds collection off while it
starts (:func:`hold`), then freezes what exists into the permanent
generation and turns collection back on before the long work
(:func:`release`): later collections, and forked workers' copy-on-write
pages, leave the frozen objects alone. Library callers are never affected:
without :func:`hold`, :func:`release` does nothing.
"""

from __future__ import annotations

import gc

_held = False


def hold() -> None:
    """Stop automatic collection until :func:`release` (if it is on now)."""
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def release() -> None:
    """Freeze every object allocated so far and restart collection (after :func:`hold`)."""
    global _held
    if _held:
        _held = False
        gc.freeze()
        gc.enable()


def finish() -> None:
    """Before exit: freeze everything so the interpreter's last collection skips it."""
    release()
    gc.freeze()
