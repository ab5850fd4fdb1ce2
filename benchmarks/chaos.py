"""Chaos run of ``gpu-bytepiece encode``: kill jobs at random moments, edit
inputs between runs, fill the disk; count what survives.

For each of ``--jobs`` rounds (default 20) a real job (``--workers 2``, small
shards, slowed by the TEST-ONLY ``GPU_BYTEPIECE_TEST_SLEEP_PER_BATCH``) is
started on a copy of real text and SIGKILLed after a random delay, at one of
these targets: the parent, a worker, or the parent during the final join
(``merge``); then it is rerun to completion and its files are compared with
an uninterrupted reference run. Every third round, the input is also edited
in the middle between the kill and the rerun (same size, modification time
restored, so only the shard hashes can tell): the rerun must refuse to reuse
the stale shards (a conflict naming the input) rather than finish.

With ``--disk-full`` (root only, and only when ``mount -t tmpfs`` works) a
job also runs on a tmpfs too small for its output: it must fail with a
one-line message (no traceback) and leave no partial dataset.

Prints: kills survived, byte-identical reruns, stale reuse detected (and
refused), disk-full runs handled. Exits 1 on any failure. Needs
``../shared/corpus`` (or ``GPU_BYTEPIECE_SHARED``).

    python benchmarks/chaos.py                 # 20 rounds
    python benchmarks/chaos.py --jobs 5 --seed 3 --disk-full
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPU_BYTEPIECE_SHARED", ROOT.parent / "shared"))
SLEEP_ENV = "GPU_BYTEPIECE_TEST_SLEEP_PER_BATCH"  # gpu_bytepiece.pipeline.shard.TEST_SLEEP_ENV


def make_input(path: Path, n_docs: int) -> None:
    corpus = SHARED / "corpus" / "en.jsonl.gz"
    with gzip.open(corpus, "rt", encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
        for line in itertools.islice(f, n_docs):
            out.write(json.dumps({"text": json.loads(line)["text"][:3000]}, ensure_ascii=False) + "\n")


def cmd(src: Path, out: Path) -> list:
    return [sys.executable, "-m", "gpu_bytepiece.cli", "encode", str(src), "-o", str(out), "--workers", "2",
            "--device", "cpu", "--shard-bytes", "16k", "--batch-bytes", "4k", "--no-progress"]


def children(pid: int) -> list:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(name))
    return out


def files_of(prefix: Path) -> dict:
    """The dataset's bytes (the manifest names the input's path, which differs per round)."""
    return {ext: Path(str(prefix) + ext).read_bytes() for ext in (".bin", ".idx")
            if Path(str(prefix) + ext).exists()}


def edit_middle(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    i = data.index(b"e", len(data) // 2)
    data[i:i + 1] = b"o"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def one_round(k: int, rng: random.Random, src0: Path, ref: dict, work: Path, stats: dict) -> None:
    d = work / f"r{k}"
    d.mkdir()
    src = d / "in.jsonl"
    shutil.copy2(src0, src)
    out = d / "ds"
    target = rng.choice(["parent", "worker", "join"])
    env = dict(os.environ, **{SLEEP_ENV: "0.05"})
    p = subprocess.Popen(cmd(src, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    manifest = Path(str(out) + ".manifest.json")
    if target == "join":  # wait for the join: every shard done, dataset not yet renamed
        while p.poll() is None and time.monotonic() - t0 < 120:
            try:
                m = json.loads(manifest.read_text())
                if len(m["done"]) == len(m["shards"]):
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.005)
    else:
        time.sleep(rng.uniform(0.5, 4.0))
    victim = p.pid
    if target == "worker":
        kids = children(p.pid)
        victim = rng.choice(kids) if kids else p.pid
    if p.poll() is None:
        os.kill(victim, signal.SIGKILL)
        stats["kills"] += 1
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    p.stderr.close()
    edited = k % 3 == 2
    if edited:
        try:
            done_before = bool(json.loads(manifest.read_text()).get("done"))
        except (OSError, ValueError):
            done_before = False
        edit_middle(src)
    r = subprocess.run(cmd(src, out), capture_output=True, text=True, timeout=600)
    if edited:
        if r.returncode != 0 and "changed since shard" in r.stderr:
            stats["stale_detected"] += 1
        elif r.returncode == 0 and not done_before:
            stats["stale_none"] += 1  # killed before any shard finished: nothing stale to reuse
        elif r.returncode != 0 and "changed (fingerprint" in r.stderr:
            stats["stale_detected"] += 1  # the quick fingerprint saw it first
        else:
            stats["failures"].append(f"round {k}: edited input, rerun rc {r.returncode}: {r.stderr[-300:]}")
        return
    if r.returncode != 0:
        stats["failures"].append(f"round {k} ({target}): rerun rc {r.returncode}: {r.stderr[-300:]}")
        return
    stats["survived"] += 1
    if files_of(out) == ref:
        stats["identical"] += 1
    else:
        stats["failures"].append(f"round {k} ({target}): rerun differs from the reference")


def disk_full(src: Path, ref: dict, work: Path, stats: dict) -> None:
    if os.geteuid() != 0:
        print("disk-full: skipped (not root)")
        return
    mnt = work / "small"
    mnt.mkdir()
    size = max(64 << 10, len(ref[".bin"]) // 2)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        print(f"disk-full: skipped (mount failed: {r.stderr.decode().strip()})")
        return
    try:
        r = subprocess.run(cmd(src, mnt / "ds"), capture_output=True, text=True, timeout=600)
        clean = r.returncode != 0 and "Traceback" not in r.stderr and not (mnt / "ds.bin").exists()
        print(f"disk-full: rc {r.returncode}, {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
        if clean:
            stats["disk_full_handled"] += 1
        else:
            stats["failures"].append(f"disk-full: rc {r.returncode}: {r.stderr[-300:]}")
    finally:
        subprocess.run(["umount", str(mnt)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--docs", type=int, default=300, help="documents in the input (en corpus, <= 3000 chars)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--disk-full", action="store_true", help="also run out of disk on a small tmpfs (root)")
    args = ap.parse_args()
    if not (SHARED / "corpus" / "en.jsonl.gz").exists():
        print(f"{SHARED}/corpus is absent: nothing to run")
        return 0
    rng = random.Random(args.seed)
    stats = {"kills": 0, "survived": 0, "identical": 0, "stale_detected": 0, "stale_none": 0,
             "disk_full_handled": 0, "failures": []}
    with tempfile.TemporaryDirectory(prefix="gb-chaos-") as tmp:
        work = Path(tmp)
        src = work / "in.jsonl"
        make_input(src, args.docs)
        subprocess.run(cmd(src, work / "ref"), check=True, capture_output=True, timeout=600)
        ref = files_of(work / "ref")
        t0 = time.monotonic()
        for k in range(args.jobs):
            one_round(k, rng, src, ref, work, stats)
        if args.disk_full:
            disk_full(src, ref, work, stats)
    edited = sum(1 for k in range(args.jobs) if k % 3 == 2)
    print(f"rounds {args.jobs} ({time.monotonic() - t0:.0f} s), input {args.docs} documents")
    print(f"kills survived:          {stats['survived']} of {args.jobs - edited} reruns of unedited inputs "
          f"({stats['kills']} SIGKILLs in all)")
    print(f"byte-identical reruns:   {stats['identical']} of {stats['survived']}")
    print(f"stale reuse detected:    {stats['stale_detected']} of {edited} edited inputs "
          f"({stats['stale_none']} killed before any shard finished: nothing to reuse)")
    if args.disk_full:
        print(f"disk-full runs handled:  {stats['disk_full_handled']}")
    for f in stats["failures"]:
        print("FAIL", f)
    return 1 if stats["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
