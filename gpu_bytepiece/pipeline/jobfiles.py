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

__all__ = ["clean_shard_dir", "listed_shard_files", "remove_outputs", "check_done_reads"]


_SHARD_FILE = re.compile(r"^\d{6}(%s)(\.tmp-(\d+))?$" % "|".join(
    re.escape(s) for f in FORMATS for s in output_files("", f)))


def clean_shard_dir(shard_dir: str, finished_too: bool, listed=()) -> list:
    """Remove what this tool writes in a job's shard folder: the temporary
    files of shard datasets (``NNNNNN.bin.tmp-PID``) whose writer is gone, and
    with ``finished_too`` the shard datasets named in ``listed`` (the job's
    manifest's: :func:`listed_shard_files`) and then the folder if nothing is
    left. Any other file is never touched: returns the names that are not
    this tool's."""
    if not os.path.isdir(shard_dir):
        return []
    listed = set(listed)
    foreign = []
    for name in sorted(os.listdir(shard_dir)):
        m = _SHARD_FILE.match(name)
        path = os.path.join(shard_dir, name)
        if m is None or not os.path.isfile(path) or os.path.islink(path):
            foreign.append(name)
        elif m.group(3) is not None:
            clean_tmp([path[: -len(m.group(2))]])
        elif finished_too and name in listed:
            os.unlink(path)
    if finished_too:
        try:
            os.rmdir(shard_dir)
        except OSError:  # not empty: a live writer's temporary file, a file this job did not write
            pass
    return foreign


def listed_shard_files(manifest_path: str, done: dict | None = None) -> list:
    """The shard files a job's manifest lists as its own (``done`` records'
    ``files``), by name in its shard folder; a name that is not a plain name
    there raises :class:`JobConflict` (the manifest is not this tool's)."""
    if done is None:
        try:
            with open(manifest_path, encoding="utf-8") as f:
                done = json.load(f).get("done")
        except (OSError, ValueError, AttributeError):
            return []
    names = []
    for rec in (done or {}).values():
        for name in (rec.get("files") or {}) if isinstance(rec, dict) else ():
            if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
                raise JobConflict(f"{manifest_path} lists {name!r} as a shard file, outside the job's shard "
                                  "folder: this tool did not write that manifest; remove the output's files "
                                  "yourself, or choose another --output")
            names.append(name)
    return names


def remove_outputs(prefix: str, fmt: str) -> None:
    """Delete a job's files: the dataset in ``fmt`` (and the format its manifest
    names), the shard datasets its manifest lists, the manifest; never a file
    the manifest does not list (whatever its name)."""
    fmts = {fmt}
    mpath = prefix + ".manifest.json"
    listed = listed_shard_files(mpath)
    try:
        with open(mpath, encoding="utf-8") as f:
            fmts.add(json.load(f)["params"]["format"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for fmt in sorted(f for f in fmts if f in FORMATS):
        for p in output_files(prefix, fmt):
            if os.path.exists(p):
                os.unlink(p)
    clean_shard_dir(os.path.abspath(prefix + ".shards"), finished_too=True, listed=listed)
    if os.path.exists(mpath):
        os.unlink(mpath)


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
