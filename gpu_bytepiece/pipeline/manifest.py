"""The job manifest: what a job reads, with which parameters, what is done.

``PREFIX.manifest.json`` (written atomically: temporary file, fsync, rename)::

    {
      "manifest_version": 1,
      "tool": "gpu-bytepiece 0.1.0",
      "params": {...},            # everything that changes the output bytes
      "inputs": [{"path", "kind", "compression", "size", "mtime_ns", "fingerprint"}, ...],
      "shards": [{"index", "parts": [[input, start, end], ...], "bytes"}, ...],
      "done": {"17": {"files": {name: size}, "docs", "tokens", "text_bytes",
                      "input_bytes", "blank_lines", "skipped": {reason: n}, "samples": [...],
                      "reads": [[input path, start, length, blake2b], ...]}},
      "complete": false,
      "totals": {...}             # when complete
    }

A shard counts as done when it is listed under ``done`` and its files exist
with the listed sizes; anything else is redone. Its ``reads`` are hashes of
the exact input bytes it was encoded from, computed while reading; a rerun
re-reads and checks them before it trusts the shard (an input edited in
place, even with its size and modification time restored, is found: the
rerun stops with a conflict). The ``fingerprint`` of an input (size and three
MiB) is only the quick first check. The manifest holds no clock
times, so an interrupted and resumed job leaves the same manifest as an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time

from ..files import write_atomic
from .errors import JobConflict, PipelineError

__all__ = ["Manifest", "MANIFEST_VERSION"]

MANIFEST_VERSION = 1


class Manifest:
    def __init__(self, path: str, data: dict):
        self.path = path
        self.data = data
        self._saved_at = 0.0
        self._dirty = False

    # ------------------------------------------------------------- create
    @classmethod
    def new(cls, path: str, tool: str, params: dict, inputs: list, shards: list) -> "Manifest":
        data = {
            "manifest_version": MANIFEST_VERSION,
            "tool": tool,
            "params": params,
            "inputs": [i.to_dict() for i in inputs],
            "shards": shards,
            "done": {},
            "complete": False,
        }
        m = cls(path, data)
        m.save()
        return m

    @classmethod
    def load(cls, path: str) -> "Manifest":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise PipelineError(f"{path}: cannot read the job manifest ({e}); use --overwrite to start over") from None
        if data.get("manifest_version") != MANIFEST_VERSION:
            raise JobConflict(f"{path}: manifest version {data.get('manifest_version')!r} is not "
                              f"{MANIFEST_VERSION}; use --overwrite to start over")
        return cls(path, data)

    # -------------------------------------------------------------- check
    def conflicts(self, params: dict, inputs: list) -> list:
        """Why this manifest's job is not the job asked for (empty: it is)."""
        why = []
        old = self.data["params"]
        for k in sorted(set(old) | set(params)):
            if old.get(k) != params.get(k):
                why.append(f"{k}: {old.get(k)!r} then, {params.get(k)!r} now")
        old_inputs = self.data["inputs"]
        if len(old_inputs) != len(inputs):
            why.append(f"inputs: {len(old_inputs)} files then, {len(inputs)} now")
        else:
            for o, n in zip(old_inputs, inputs):
                n = n.to_dict()
                if o["path"] != n["path"]:
                    why.append(f"input {o['path']} then, {n['path']} now")
                elif n["path"] != "-":
                    for k in ("size", "mtime_ns", "fingerprint", "kind", "compression"):
                        if o[k] != n[k]:
                            why.append(f"input {n['path']} changed ({k}: {o[k]!r} then, {n[k]!r} now)")
                            break
        return why

    # --------------------------------------------------------------- done
    @property
    def shards(self) -> list:
        return self.data["shards"]

    @property
    def done(self) -> dict:
        return self.data["done"]

    def is_done(self, index: int, shard_dir: str) -> bool:
        rec = self.done.get(str(index))
        if rec is None:
            return False
        for name, size in rec["files"].items():
            p = os.path.join(shard_dir, name)
            if not os.path.exists(p) or os.path.getsize(p) != size:
                return False
        return True

    def mark_done(self, index: int, record: dict) -> None:
        self.done[str(index)] = record
        self._dirty = True
        self.save(every=1.0)

    def forget(self, index: int) -> None:
        if self.done.pop(str(index), None) is not None:
            self._dirty = True

    def save(self, every: float = 0.0) -> None:
        """Write atomically; with ``every``, at most once per that many seconds."""
        now = time.monotonic()
        if every and now - self._saved_at < every:
            return
        write_atomic(self.path, (json.dumps(self.data, indent=1, sort_keys=True) + "\n").encode("utf-8"))
        self._saved_at = now
        self._dirty = False

    def flush(self) -> None:
        if self._dirty:
            self.save()
