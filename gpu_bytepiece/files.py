"""Atomic file writes: the one definition (standard library only).

A file is written under a temporary name (``NAME.tmp-PID``: the writing
process's id), fsync'd, renamed to its final name and its folder fsync'd, so
a file with a final name is always whole, even after a crash or a kill. Used
by model saving, the encode job's manifest, its dataset writers and
``merge``. :func:`clean_tmp` removes the temporary files of given final names
left by processes that are gone (or by this one), never another live
process's.
"""

from __future__ import annotations

import os

__all__ = ["tmp_name", "fsync_dir", "fsync_file", "Staged", "write_atomic", "pid_alive", "clean_tmp"]


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


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs (another user's counts; a zombie, whose
    parent has not reaped it yet, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):  # no /proc: exists, so alive
        return True


def clean_tmp(finals) -> list:
    """Remove the temporary files (``NAME.tmp-PID``) of the final paths
    ``finals`` whose writer is gone, or is this process; returns the paths
    removed. Temporary files of other names, and of live processes, are
    never touched."""
    by_dir: dict = {}
    for p in finals:
        p = os.path.abspath(os.fspath(p))
        by_dir.setdefault(os.path.dirname(p), set()).add(os.path.basename(p))
    removed = []
    me = os.getpid()
    for folder, names in by_dir.items():
        try:
            listing = os.listdir(folder)
        except OSError:
            continue
        for name in listing:
            base, sep, pid = name.rpartition(".tmp-")
            if not sep or base not in names or not pid.isdigit():
                continue
            if int(pid) != me and pid_alive(int(pid)):
                continue
            try:
                os.unlink(os.path.join(folder, name))
                removed.append(os.path.join(folder, name))
            except OSError:  # pragma: no cover
                pass
    return removed
