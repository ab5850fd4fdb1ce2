"""The progress of an encode job: input bytes, documents, tokens per second.

On a terminal (or with ``--progress``) a bar over the job's input bytes;
elsewhere (a log, a pipe) one plain line per stage (encoding the shards,
joining them), as ``train`` prints: both by
:func:`gpu_bytepiece.progress.progress_bar`, the one definition.
At the end the bar shows the job's totals, which are the summary's:
documents, tokens, and the input bytes of all its shards (finished ones of
an earlier run included).
"""

from __future__ import annotations

import time

from ..progress import progress_bar

__all__ = ["Progress"]


class Progress:
    """An encode job's progress over ``total`` input bytes (None: unknown, e.g.
    stdin), of which ``initial`` (and ``docs``, ``tokens``) were done by an
    earlier run. ``enabled``: None: a bar on a terminal, a line elsewhere;
    True: a bar anyway; False: only counts."""

    def __init__(self, total, initial, enabled, docs: int = 0, tokens: int = 0):
        self.total, self.bytes, self.docs, self.tokens = total or None, initial, docs, tokens
        self._enabled = enabled is not False
        self._force = enabled is True
        self.t0 = time.monotonic()
        self._tokens0 = tokens
        self._shown = 0.0
        self.bar = progress_bar(self._enabled, bar=self._force, total=self.total, initial=initial, unit="B",
                                unit_scale=True, unit_divisor=1000, desc="encode", dynamic_ncols=True,
                                smoothing=0.1, mininterval=0.5, ncols=None)

    def update(self, nbytes, docs, tokens):
        self.bytes += nbytes
        self.docs += docs
        self.tokens += tokens
        self.bar.update(nbytes)
        now = time.monotonic()
        if now - self._shown >= 0.5:
            self._shown = now
            rate = (self.tokens - self._tokens0) / max(now - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{self.docs:,} docs, {_si(rate)} tok/s")

    def close(self, failed: bool = False):
        """End the encoding stage: the bar (or line) shows the final counts;
        ``failed``: a bar stops where it is, and no line is printed."""
        if failed:
            if hasattr(self.bar, "refresh"):  # a tqdm bar
                self.bar.close()
            return
        self.bar.set_postfix_str(f"{self.docs:,} documents, {self.tokens:,} tokens")
        self.bar.close()

    def stage(self, desc: str, unit: str, total: int):
        """A later stage's bar (or line), e.g. joining the shards."""
        return progress_bar(self._enabled, bar=self._force, desc=desc, unit=unit, total=total)


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"
