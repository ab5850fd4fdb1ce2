"""The progress bar of an encode job (input bytes, documents, tokens per second)."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """A tqdm bar over input bytes (``total`` None: unknown, e.g. stdin), with
    documents and tokens/s after it; ``enabled=False``: only counts."""

    def __init__(self, total, initial, enabled: bool):
        self.bar = None
        self.docs = 0
        self.tokens = 0
        self.t0 = time.monotonic()
        self._shown = 0.0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, initial=initial, unit="B", unit_scale=True, unit_divisor=1000,
                            desc="encode", file=sys.stderr, dynamic_ncols=True, smoothing=0.1, mininterval=0.5)

    def update(self, nbytes, docs, tokens):
        self.docs += docs
        self.tokens += tokens
        if self.bar is None:
            return
        self.bar.update(nbytes)
        now = time.monotonic()
        if now - self._shown >= 0.5:
            self._shown = now
            rate = self.tokens / max(now - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{self.docs:,} docs, {_si(rate)} tok/s", refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"
