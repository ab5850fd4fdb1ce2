"""The trainer's progress bars (tqdm), or none."""

from __future__ import annotations

__all__ = ["progress_bar"]


def progress_bar(enabled, **kw):
    """A ``tqdm`` bar with ``kw`` when ``enabled``, else an object that ignores the same calls."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(ncols=0, **kw)


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass

    def set_postfix_str(self, s):
        pass
