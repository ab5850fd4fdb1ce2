"""Issue 12, items 2 and 4: resume never reuses stale work, and an input that
changes while the job runs fails the job.

Each finished shard records hashes of the exact input bytes it read
(computed while reading); a rerun re-reads and checks them before trusting
the shard. At the end of each input read, the file's size and modification
time must still be those of the plan.
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import corpus_sample, shared_model
from gpu_bytepiece.pipeline.errors import JobConflict, PipelineError
from gpu_bytepiece.pipeline.runner import EncodeOptions, encode

PLUS = "bytepiece.plus.40k.model"


PAD = " " * 1023 + "\n"  # a blank line: read, counted, not a document


def write_jsonl(path, texts):
    """The documents between 1.1 MiB and 3 MiB of blank lines: past the first
    MiB and the middle MiB that the quick fingerprint reads."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(PAD * 1100)
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        f.write(PAD * 3000)


@pytest.fixture()
def job(tmp_path):
    src = tmp_path / "in.jsonl"
    write_jsonl(src, corpus_sample("en", 40, every=17, max_chars=600))
    out = tmp_path / "out" / "ds"

    def run(**kw):
        opts = EncodeOptions(inputs=[str(src)], output=str(out), format="megatron", model=str(shared_model(PLUS)),
                             device="cpu", workers=1, shard_bytes=256 << 10, progress=False, **kw)
        return encode(opts)
    return src, out, run


def edit_middle_keep_size_and_mtime(path):
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    i = data.index(b"e", len(PAD) * 1100 + 3000)  # a letter inside some text
    data[i:i + 1] = b"o"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size


def test_rerun_of_a_complete_job_finds_an_edit_with_size_and_mtime_restored(job):
    """Was: "already complete", the dataset being the old file's."""
    src, out, run = job
    s = run()
    assert s["shards"] > 3 and s["shards_run"] == s["shards"]
    edit_middle_keep_size_and_mtime(src)
    with pytest.raises(JobConflict, match=r"in.jsonl changed since shard \d+ was encoded from it"):
        run()
    s = run(overwrite=True)  # the fix the message names
    assert s["shards_run"] == s["shards"]


def test_resume_after_a_kill_finds_an_edited_finished_shard(job):
    """Was: "N already done" reused shards of the old file."""
    src, out, run = job
    run(keep_shards=True)
    mpath = str(out) + ".manifest.json"
    with open(mpath, encoding="utf-8") as f:
        m = json.load(f)
    m["complete"] = False  # as if killed before the join
    with open(mpath, "w", encoding="utf-8") as f:
        json.dump(m, f)
    os.unlink(str(out) + ".bin")
    edit_middle_keep_size_and_mtime(src)
    with pytest.raises(JobConflict, match=r"changed since shard"):
        run(keep_shards=True)


def test_resume_after_a_kill_reuses_unchanged_shards(job):
    src, out, run = job
    first = run(keep_shards=True)
    want = open(str(out) + ".bin", "rb").read()
    mpath = str(out) + ".manifest.json"
    with open(mpath, encoding="utf-8") as f:
        m = json.load(f)
    m["complete"] = False
    m["done"].pop("1")
    with open(mpath, "w", encoding="utf-8") as f:
        json.dump(m, f)
    s = run(keep_shards=True)
    assert (s["shards_resumed"], s["shards_run"]) == (first["shards"] - 1, 1)
    assert open(str(out) + ".bin", "rb").read() == want


def test_input_truncated_while_the_job_runs_fails_the_job(job, monkeypatch):
    """Was: rc 0 with a short dataset; only the rerun noticed."""
    import gpu_bytepiece.pipeline.runner as runner

    src, out, run = job
    real = runner.encode_shard
    size = os.path.getsize(src)

    def truncating(ctx, shard, tok, **kw):
        rec = real(ctx, shard, tok, **kw)
        if shard["index"] == 0:
            with open(src, "r+b") as f:
                f.truncate(size * 2 // 3)
        return rec

    monkeypatch.setattr(runner, "encode_shard", truncating)
    with pytest.raises(PipelineError, match=r"in.jsonl: the input changed while the job read it \(size"):
        run()
    assert not os.path.exists(str(out) + ".bin")


def test_input_edited_while_the_job_runs_fails_the_job(job, monkeypatch):
    import gpu_bytepiece.pipeline.runner as runner

    src, out, run = job
    real = runner.encode_shard

    def editing(ctx, shard, tok, **kw):
        rec = real(ctx, shard, tok, **kw)
        if shard["index"] == 0:
            data = src.read_bytes()
            src.write_bytes(data.replace(b"e", b"o", 1))  # same size, new mtime
            st = os.stat(src)
            os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        return rec

    monkeypatch.setattr(runner, "encode_shard", editing)
    with pytest.raises(PipelineError, match=r"modified after the job started"):
        run()
