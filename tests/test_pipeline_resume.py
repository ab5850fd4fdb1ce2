"""Kill a real ``gpu-bytepiece encode`` job with SIGKILL, rerun it, compare bytes.

The job is slowed down with the TEST-ONLY environment variable
``GPU_BYTEPIECE_TEST_SLEEP_PER_BATCH`` (seconds to sleep after each batch a
shard writes; ``gpu_bytepiece.pipeline.shard.TEST_SLEEP_ENV``), so that it
can be killed while shards are being written. Nothing else reads it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import corpus_docs
from gpu_bytepiece.pipeline.shard import TEST_SLEEP_ENV

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and SIGKILL")


def children(pid: int) -> list:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(name))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def encode_cmd(src, out, fmt, summary):
    return [sys.executable, "-m", "gpu_bytepiece.cli", "encode", str(src), "-o", str(out), "--format", fmt,
            "--workers", "2", "--device", "cpu", "--shard-bytes", "5k", "--batch-bytes", "2k", "--append-eos",
            "--keep-shards", "--no-progress", "--summary-json", str(summary)]


def done_shards(manifest):
    try:
        with open(manifest, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError):
        return -1, None
    return len(m["done"]), len(m["shards"])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    texts = corpus_docs("zh", 60, every=31) + corpus_docs("code", 10, every=150, max_chars=4000)
    src = d / "docs.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    return src


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("ref") / "ds"
    cmd = encode_cmd(source, out, "megatron", out.parent / "summary.json")
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return out


@pytest.mark.parametrize("when", ["mid-run", "at-start"])
def test_sigkill_then_rerun_is_byte_identical(tmp_path, source, reference, when):
    out = tmp_path / "ds"
    manifest = str(out) + ".manifest.json"
    env = dict(os.environ, **{TEST_SLEEP_ENV: "0.15"})
    proc = subprocess.Popen(encode_cmd(source, out, "megatron", tmp_path / "s1.json"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    if when == "mid-run":
        while time.monotonic() < deadline:
            done, total = done_shards(manifest)
            if done >= 2:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        done, total = done_shards(manifest)
        assert 2 <= done < total, "the job must be killed while shards remain"
    else:
        while time.monotonic() < deadline and not os.path.exists(manifest):
            time.sleep(0.02)
        time.sleep(0.3)
    kids = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stderr.close()
    # workers die with the job (PR_SET_PDEATHSIG): nothing keeps writing
    t = time.monotonic()
    while any(alive(k) for k in kids) and time.monotonic() - t < 15:
        time.sleep(0.05)
    assert not any(alive(k) for k in kids)
    assert not os.path.exists(str(out) + ".bin")

    with open(manifest, encoding="utf-8") as f:
        before = json.load(f)["done"]
    shard_dir = str(out) + ".shards"
    stamps = {name: (os.stat(os.path.join(shard_dir, name)).st_ino, os.stat(os.path.join(shard_dir, name)).st_mtime_ns)
              for rec in before.values() for name in rec["files"]}

    r = subprocess.run(encode_cmd(source, out, "megatron", tmp_path / "s2.json"), capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    summary = json.loads((tmp_path / "s2.json").read_text())
    assert summary["shards_resumed"] == len(before)
    assert summary["shards_run"] == summary["shards"] - len(before)
    for name, stamp in stamps.items():  # finished shards were not redone
        st = os.stat(os.path.join(shard_dir, name))
        assert (st.st_ino, st.st_mtime_ns) == stamp, name
    for ext in (".bin", ".idx", ".manifest.json"):
        assert (tmp_path / f"ds{ext}").read_bytes() == reference.with_name(f"ds{ext}").read_bytes(), ext
    assert not [n for n in os.listdir(shard_dir) if ".tmp-" in n]
