"""A job's own files: which they are, removing only them, checking finished shards.

An encode job writing ``PREFIX`` owns ``PREFIX.manifest.json``, its dataset
files, ``PREFIX.lock`` and, in ``PREFIX.shards/``, the shard datasets
(``NNNNNN.bin`` ...); it also owns the temporary files of these names
(``NAME.tmp-PID``) whose writer process is gone. Nothing else is ever
removed: not an input, not a file of another name in the shard folder, not
another job's or a live process's temporary file.
"""

from __future__ import annotations

import json
import os
import re

from ..files import clean_tmp
from .errors import JobConflict
from .formats import FORMATS, output_files
from .manifest import Manifest
from .streams import verify_read

__all__ = ["clean_shard_dir", "remove_outputs", "check_done_reads"]


_SHARD_FILE = re.compile(r"^\d{6}(%s)(\.tmp-(\d+))?$" % "|".join(
    re.escape(s) for f in FORMATS for s in output_files("", f)))


def clean_shard_dir(shard_dir: str, finished_too: bool) -> list:
    """Remove what this tool writes in a job's shard folder: the temporary
    files of shard datasets (``NNNNNN.bin.tmp-PID``) whose writer is gone, and
    with ``finished_too`` the shard datasets themselves and then the folder
    if nothing is left. Any other file is never touched: returns their names."""
    if not os.path.isdir(shard_dir):
        return []
    foreign = []
    for name in sorted(os.listdir(shard_dir)):
        m = _SHARD_FILE.match(name)
        path = os.path.join(shard_dir, name)
        if m is None or not os.path.isfile(path) or os.path.islink(path):
            foreign.append(name)
        elif m.group(3) is not None:
            clean_tmp([path[: -len(m.group(2))]])
        elif finished_too:
            os.unlink(path)
    if finished_too and not foreign:
        try:
            os.rmdir(shard_dir)
        except OSError:  # a live writer's temporary file
            pass
    return foreign


def remove_outputs(prefix: str, fmt: str) -> None:
    """Delete a job's files: the dataset in ``fmt`` (and the format its manifest
    names), the shard datasets, the manifest; never a file of another name."""
    fmts = {fmt}
    try:
        with open(prefix + ".manifest.json", encoding="utf-8") as f:
            fmts.add(json.load(f)["params"]["format"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for fmt in sorted(f for f in fmts if f in FORMATS):
        for p in output_files(prefix, fmt):
            if os.path.exists(p):
                os.unlink(p)
    clean_shard_dir(os.path.abspath(prefix + ".shards"), finished_too=True)
    if os.path.exists(prefix + ".manifest.json"):
        os.unlink(prefix + ".manifest.json")


def check_done_reads(prefix: str, manifest: Manifest, inputs: list) -> None:
    """Before a rerun trusts a finished shard, re-read and hash the input bytes
    it was encoded from (what :meth:`.streams.Source.finish` recorded; several
    shards at once). A shard recorded without hashes is redone; one whose
    bytes differ means the input changed since: :class:`JobConflict`."""
    from concurrent.futures import ThreadPoolExecutor

    by_path = {i.path: i for i in inputs}
    checks = []
    for k, rec in list(manifest.done.items()):
        if "reads" not in rec or any(r[0] not in by_path for r in rec["reads"]):
            manifest.forget(int(k))
            continue
        checks.extend((int(k), r) for r in rec["reads"])
    if not checks:
        return

    def check(item):
        k, (path, start, length, digest) = item
        try:
            return verify_read(by_path[path], start, length, digest)
        except OSError:
            return False

    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        ok = list(pool.map(check, checks))
    bad = [item for item, good in zip(checks, ok) if not good]
    if bad:
        k, (path, start, length, _) = bad[0]
        raise JobConflict(f"{prefix}: {path} changed since shard {k} was encoded from it (bytes {start:,} to "
                          f"{start + length:,} hash differently; {len(bad)} stale range(s) in all): its results "
                          "are stale; use --overwrite to redo the job")
