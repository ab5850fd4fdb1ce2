"""The command line's garbage-collector policy (a CPython detail, CLI only).

Starting a job allocates some 100,000 container objects that live until exit
(Numba's typing and target registries, LLVM handles, the model) and no
garbage: collections during that phase traverse them for nothing, and the
interpreter's last collection at exit frees them one by one, running
LLVM's destructors (measured: 0.03 s of imports and 0.15 s of exit on a
0.7 s job start; with the heap frozen, exit skips them). The CLI holds
collection off while it starts (:func:`hold`), then freezes what exists
into the permanent generation and turns collection back on before the long
work (:func:`release`): later collections, and forked workers'
copy-on-write pages, leave the frozen objects alone. A caller of ``cli.main()`` only sees
collection paused while the job starts; nothing of its own is frozen.
"""

from __future__ import annotations

import gc

_held = False
_freeze = False


def hold(freeze: bool = False) -> None:
    """Stop automatic collection until :func:`release` (if it is on now).

    ``freeze``: :func:`release` freezes the heap too; only for the program
    itself (``gpu-bytepiece``), never for a caller of ``cli.main()``, whose
    own objects would stay uncollectable.
    """
    global _held, _freeze
    if gc.isenabled():
        gc.disable()
        _held, _freeze = True, freeze


def release() -> None:
    """Restart collection after :func:`hold`, freezing what exists first if asked."""
    global _held
    if _held:
        _held = False
        if _freeze:
            gc.freeze()
        gc.enable()


def finish() -> None:
    """The program's last step: freeze everything so the interpreter's last collection skips it."""
    release()
    gc.freeze()
