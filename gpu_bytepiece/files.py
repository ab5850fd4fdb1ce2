"""Atomic file writes: the one definition (standard library only).

A file is written under a temporary name (``NAME.tmp-PID``), fsync'd,
renamed to its final name and its folder fsync'd, so a file with a final name
is always whole, even after a crash or a kill. Used by model saving, the
encode job's manifest, its dataset writers and ``merge``.
"""

from __future__ import annotations

import os

__all__ = ["tmp_name", "fsync_dir", "fsync_file", "Staged", "write_atomic", "clean_tmp"]


def tmp_name(path: str) -> str:
    """The temporary name ``path`` is written under by this process."""
    return f"{path}.tmp-{os.getpid()}"


def fsync_dir(path: str) -> None:
    """fsync the folder that holds ``path`` (makes a rename in it durable)."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    """fsync the file ``path`` (its data reach the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Staged:
    """Files written under temporary names, renamed together by :meth:`commit`.

    Parameters
    ----------
    finals : iterable of str
        The final names; write to ``self.tmps`` (same order) instead.
    """

    def __init__(self, finals):
        self.finals = list(finals)
        self.tmps = [tmp_name(p) for p in self.finals]

    def commit(self) -> dict:
        """fsync every temporary file, rename each to its final name, fsync the
        folder; returns ``{final base name: size}``."""
        for tmp in self.tmps:
            fsync_file(tmp)
        sizes = {}
        for tmp, final in zip(self.tmps, self.finals):
            os.replace(tmp, final)
            sizes[os.path.basename(final)] = os.path.getsize(final)
        fsync_dir(self.finals[0])
        return sizes

    def discard(self) -> None:
        """Remove the temporary files (those that exist)."""
        for tmp in self.tmps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename)."""
    staged = Staged([os.fspath(path)])
    try:
        with open(staged.tmps[0], "wb") as f:
            f.write(data)
        staged.commit()
    except BaseException:
        staged.discard()
        raise


def clean_tmp(folder: str, stem: str = "") -> None:
    """Remove the temporary files a killed writer left in ``folder``
    (names with ``.tmp-`` that start with ``stem``)."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith(stem) and ".tmp-" in name:
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:  # pragma: no cover
                pass
