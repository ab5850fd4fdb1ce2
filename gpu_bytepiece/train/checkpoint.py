"""The trainer's work folder: checkpoints that let a killed training resume.

A work folder holds ``work.json`` (what is trained: parameters, batch size,
the inputs' identity when known) and the checkpoints, each written under a
temporary name and renamed (:mod:`gpu_bytepiece.files`), so a file with its
final name is always whole, whenever the process is killed:

- ``pass1.json`` / ``pass2.json``: the finished input batches of a corpus
  pass (their number and content hashes) and the count runs spilled so far
  (``ngrams*.bin``; ``pieces*.bin`` and ``longpieces*.bin``, written and
  fsync'd before the state that names them);
- ``ngrams.npz`` + ``ngrams.json``: the finished n-gram model;
- ``pieces.npz`` + ``pieces.json`` + ``dropped_*.bin``: the finished piece
  counts (the pieces pruning keeps; the others);
- ``prune.npz``: the piece pruning after each re-tokenization round.

A file no checkpoint names (written after the last checkpoint) is removed
when the folder is opened again.
"""

from __future__ import annotations

import json
import os
import re
import signal

import numpy as np

from .. import config
from ..files import Staged, clean_tmp, write_atomic
from .memory import release_memory

__all__ = ["PassCheckpoints", "WorkDir", "WorkDirMismatch", "kill_point"]

VERSION = 2
#: The names a training writes in its work folder (nothing else is ever removed).
_OURS = re.compile(r"(work\.json|pass[12]\.json|(ngrams|pieces)\.(npz|json)|table\d+\.npz|prune\.npz"
                   r"|texts\.bin|ngram_table\.bin|(ngrams|pieces|longpieces)\d+\.bin|dropped_(pool|len|cnt)\.bin)"
                   r"(\.tmp-\d+)?$")
_KILL_ENV = "GPU_BYTEPIECE_TEST_KILL_AT"


class WorkDirMismatch(ValueError):
    """The work folder holds checkpoints of another training."""


def kill_point(stage: str, n: int) -> None:
    """Tests: ``SIGKILL`` this process at ``stage:n`` when ``$GPU_BYTEPIECE_TEST_KILL_AT`` names it.

    Stages: ``pass1`` / ``pass2`` (after batch ``n`` is counted, before any
    checkpoint of it), ``prune`` (after re-tokenization round ``n``).
    """
    at = os.environ.get(_KILL_ENV)
    if at and at == f"{stage}:{n}":
        os.kill(os.getpid(), signal.SIGKILL)


def _differences(old: dict, new: dict, prefix="") -> list:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {_short(a)} there, {_short(b)} now")
    return out


def _short(v) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 120 else s[:117] + "..."


class WorkDir:
    """A training's checkpoint folder (made if missing).

    Parameters
    ----------
    path : str
    identity : dict
        What is trained (JSON): compared with the folder's ``work.json``.
    overwrite : bool
        Start again in a folder that holds another training (else
        :class:`WorkDirMismatch`).
    """

    def __init__(self, path, identity: dict, overwrite: bool = False):
        self.path = os.path.abspath(os.fspath(path))
        self.identity = {"version": VERSION, **identity}
        self.identity = json.loads(json.dumps(self.identity, sort_keys=True))
        meta = os.path.join(self.path, "work.json")
        if os.path.exists(meta):
            try:
                with open(meta, encoding="utf-8") as f:
                    old = json.load(f)
            except (OSError, ValueError) as e:
                old = {"unreadable": str(e)}
            if old != self.identity:
                if not overwrite:
                    diff = "; ".join(_differences(old, self.identity)[:6])
                    raise WorkDirMismatch(
                        f"work folder {self.path} holds checkpoints of another training ({diff}): rerun with "
                        "the same inputs and parameters to resume it, or pass --overwrite (overwrite=True) to "
                        "start again")
                self.wipe()
        elif os.path.isdir(self.path) and any(not _OURS.match(n) for n in os.listdir(self.path)):
            raise WorkDirMismatch(f"work folder {self.path} holds files that are not a training's checkpoints "
                                  "(no work.json): give an empty or new folder")
        if not os.path.exists(meta):
            self.wipe()
            os.makedirs(self.path, exist_ok=True)
            write_atomic(meta, json.dumps(self.identity, sort_keys=True, indent=1).encode())
        clean_tmp(self.path)

    def wipe(self) -> None:
        """Remove every checkpoint (only the files a training writes)."""
        self.remove_folder(self.path)

    @staticmethod
    def remove_folder(path) -> None:
        """Remove a finished training's work folder (its checkpoints, then the folder if empty)."""
        if not os.path.isdir(path):
            return
        for name in os.listdir(path):
            if _OURS.match(name):
                os.unlink(os.path.join(path, name))
        try:
            os.rmdir(path)
        except OSError:
            pass

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def exists(self, name: str) -> bool:
        return os.path.exists(self.file(name))

    # ------------------------------------------------------------ JSON states
    def load_json(self, name: str):
        """The JSON checkpoint ``name``, or None."""
        try:
            with open(self.file(name), encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def save_json(self, name: str, obj) -> None:
        write_atomic(self.file(name), json.dumps(obj, sort_keys=True).encode())

    # ------------------------------------------------------------ arrays
    def save_arrays(self, name: str, **arrays) -> None:
        """``arrays`` in ``name`` (``.npz``, uncompressed), atomically."""
        staged = Staged([self.file(name)])
        try:
            with open(staged.tmps[0], "wb") as f:
                np.savez(f, **arrays)
            staged.commit()
        except BaseException:
            staged.discard()
            raise

    def load_arrays(self, name: str):
        """``{name: array}`` of the ``.npz`` checkpoint ``name``, or None."""
        if not self.exists(name):
            return None
        with np.load(self.file(name)) as z:
            return {k: z[k] for k in z.files}

    def remove(self, *names) -> None:
        for name in names:
            try:
                os.unlink(self.file(name))
            except FileNotFoundError:
                pass

    def remove_orphans(self, prefix: str, keep, ext: str = ".bin") -> None:
        """Remove the files ``PREFIX<n>EXT`` not in ``keep`` (written after the last checkpoint)."""
        pat = re.compile(re.escape(prefix) + r"\d+" + re.escape(ext) + "$")
        keep = {os.path.basename(k) for k in keep if k}
        for name in os.listdir(self.path):
            if pat.match(name) and name not in keep:
                os.unlink(self.file(name))



class PassCheckpoints:
    """The checkpoints of one corpus pass (``name``: ``pass1`` or ``pass2``), or none (``work`` None).

    Restores the pass's count runs into ``stores`` (a store or a list of
    them: :class:`~.runs.RunStore`, :class:`~.piece_store.LongPieceStore`,
    each with a distinct ``name``) and the corpus's state, says how many
    batches to skip (``skip``) and whether the pass is ``complete``;
    :meth:`after_batch` checkpoints every ``config.TRAIN_CHECKPOINT_BYTES``
    of input, :meth:`finish` at the end.
    """

    def __init__(self, work, name, stores, corpus):
        self.work, self.name, self.corpus = work, name, corpus
        self.stores = list(stores) if isinstance(stores, (list, tuple)) else [stores]
        self.state = work.load_json(f"{name}.json") if work is not None else None
        self.skip = 0
        self.complete = False
        self.since = 0
        if work is None:
            return
        spills = (self.state or {}).get("spills", {})
        if self.state is not None:
            for store in self.stores:
                store.restore(spills[store.name])
            self.skip = self.state["batches"]
            self.complete = self.state["complete"]
            if name == "pass1":
                corpus.restore(self.state["corpus"])
        for store in self.stores:
            work.remove_orphans(store.name, [n for n, _ in spills.get(store.name, [])])

    def run(self, batches, bar, count) -> int:
        """``count(*item)`` for each ``(index, nbytes, item)`` of ``batches``, in batch order,
        advancing ``bar`` and checkpointing (``index``: the batch's place in the pass,
        ``nbytes``: its input bytes; :meth:`.corpus.Corpus.numbered`).

        Returns the number of batches counted (none when the pass was complete).
        """
        counted = 0
        if self.complete:
            return counted
        for index, nbytes, item in batches:
            count(*item)
            del item
            release_memory()
            bar.update(nbytes)
            counted += 1
            self.after_batch(index, nbytes)
        self.finish()
        bar.close()
        return counted

    def after_batch(self, index, nbytes):
        """Call after batch ``index`` (of ``nbytes`` input bytes) is counted."""
        kill_point(self.name, index)
        if self.work is None:
            return
        self.since += nbytes
        if self.since >= config.TRAIN_CHECKPOINT_BYTES:
            self._save(index + 1, False)
            self.since = 0

    def finish(self):
        """Call when the pass has read every batch."""
        if self.work is not None and not self.complete:
            self._save(self.corpus.index + 1, True)

    def _save(self, batches, complete):
        spills = {store.name: store.checkpoint() for store in self.stores}
        state = {"batches": batches, "complete": complete, "spills": spills}
        if self.name == "pass1":
            if self.corpus.spill is not None:
                self.corpus.spill.flush()
                os.fsync(self.corpus.spill.fileno())
            state["corpus"] = self.corpus.state(batches)
        self.work.save_json(f"{self.name}.json", state)

    def done(self):
        """The stage that used the pass's counts is checkpointed: drop the pass's files."""
        if self.work is not None:
            for store in self.stores:
                store.remove_spills()
            self.work.remove(f"{self.name}.json")
