"""A job's progress (``train``, ``encode``): a bar per stage on a terminal, a plain line per stage otherwise.

A bar (``tqdm``) shows the stage's total and an ETA when the total is known
(input bytes of files, the corpus bytes in the second pass, the count
entries to merge); elsewhere (a log file, a pipe) each stage prints one line
when it ends: what it did, in how long, how fast.
"""

from __future__ import annotations

import sys
import time

__all__ = ["progress_bar"]


def progress_bar(enabled, bar=None, **kw):
    """A stage's progress: a ``tqdm`` bar with ``kw`` on a terminal, one line at the end elsewhere.

    ``enabled`` False: an object that ignores the same calls. ``bar`` True: the
    bar even off a terminal (``encode --progress``).
    """
    if not enabled:
        return _NoBar()
    stream = sys.stderr
    if bar or getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        kw.setdefault("ncols", 0)
        return tqdm(file=stream, **kw)
    return _LineBar(stream, kw.get("desc", ""), kw.get("unit", ""), kw.get("total"))


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass

    def set_postfix_str(self, s):
        pass


class _LineBar(_NoBar):
    """One line when the stage ends: ``Count Ngrams: 95.0 MB in 12.3 s (7.7 MB/s)``
    (what this run did: a resumed stage's ``initial`` is not counted)."""

    def __init__(self, stream, desc, unit, total):
        self.stream, self.desc, self.unit, self.total = stream, desc, unit, total
        self.n = 0
        self.t0 = time.perf_counter()
        self.postfix = ""

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, s):
        self.postfix = s

    def close(self):
        dt = time.perf_counter() - self.t0
        if self.unit == "B":
            what, rate = f"{self.n / 1e6:,.2f} MB", f"{self.n / 1e6 / max(dt, 1e-9):,.2f} MB/s"
        else:
            what, rate = f"{self.n:,}{self.unit}", f"{self.n / max(dt, 1e-9):,.0f}{self.unit}/s"
        extra = f"; {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {what} in {dt:.1f} s ({rate}){extra}", file=self.stream, flush=True)
