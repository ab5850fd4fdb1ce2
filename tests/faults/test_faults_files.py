"""Issue 12, items 3, 5 and 8: the tool deletes only its own files.

``--overwrite`` removes the dataset, the manifest and the shard datasets it
writes, never an input or another file; temporary files are named after the
process writing them and cleanup removes only those of this job's own file
names whose process is gone; ``merge`` validates every input.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import corpus_sample, shared_model
from gpu_bytepiece.pipeline.errors import PipelineError
from gpu_bytepiece.pipeline.runner import EncodeOptions, encode

PLUS = "bytepiece.plus.40k.model"


def write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")


def run(inputs, out, **kw):
    kw.setdefault("format", "megatron")
    opts = EncodeOptions(inputs=[str(i) for i in inputs], output=str(out), model=str(shared_model(PLUS)),
                         device="cpu", workers=1, progress=False, **kw)
    return encode(opts)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture()
def docs():
    return corpus_sample("en", 12, every=31, max_chars=400)


# ------------------------------------------------------------------ item 3
def test_overwrite_never_deletes_an_input_in_the_shard_folder(tmp_path, docs):
    """Was: ``encode c.shards -o c --overwrite`` emptied c.shards/, then failed."""
    (tmp_path / "c.shards").mkdir()
    src = tmp_path / "c.shards" / "en.jsonl"
    write_jsonl(src, docs)
    want = src.read_bytes()
    with pytest.raises(PipelineError, match=r"en.jsonl lies in .*c.shards, the folder where this job keeps"):
        run([tmp_path / "c.shards"], tmp_path / "c", overwrite=True)
    assert src.read_bytes() == want


def test_overwrite_leaves_foreign_files_and_refuses_the_folder(tmp_path, docs):
    src = tmp_path / "in.jsonl"
    write_jsonl(src, docs)
    out = tmp_path / "o" / "ds"
    run([src], out, keep_shards=True)
    shard_dir = tmp_path / "o" / "ds.shards"
    assert sorted(os.listdir(shard_dir)) == ["000000.bin", "000000.idx"]
    (shard_dir / "notes.txt").write_text("mine")
    with pytest.raises(PipelineError, match=r"holds files this tool did not write \(notes.txt\)"):
        run([src], out, overwrite=True)
    assert (shard_dir / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(shard_dir)) == ["notes.txt"]  # its own shard files went
    (shard_dir / "notes.txt").unlink()
    s = run([src], out, overwrite=True)
    assert s["docs"] == len(docs) and not shard_dir.exists()


# ------------------------------------------------------------------ item 8
def test_cleanup_touches_only_this_jobs_temporary_files_of_dead_writers(tmp_path, docs):
    """Was: a job on r/out deleted the live temporary files of a job on r/out.v2."""
    src = tmp_path / "in.jsonl"
    write_jsonl(src, docs)
    r = tmp_path / "r"
    r.mkdir()
    live, gone = os.getppid(), dead_pid()
    others = [f"out.v2.bin.tmp-{live}", f"out.v2.bin.tmp-{gone}", f"out.v2.manifest.json.tmp-{gone}",
              f"out.bin.tmp-{live}", "out.bin.tmp-x"]
    mine = [f"out.bin.tmp-{gone}", f"out.idx.tmp-{gone}", f"out.manifest.json.tmp-{gone}"]
    for name in others + mine:
        (r / name).write_bytes(b"x")
    (r / "out.shards").mkdir()
    (r / "out.shards" / f"000000.bin.tmp-{gone}").write_bytes(b"x")
    (r / "out.shards" / f"000000.bin.tmp-{live}").write_bytes(b"x")
    (r / "out.manifest.json").write_text("{}")  # a job to resume, of another version: start over
    run([src], r / "out", overwrite=True, keep_shards=True)
    left = sorted(os.listdir(r))
    assert [n for n in left if ".tmp-" in n] == sorted(others)
    assert sorted(os.listdir(r / "out.shards")) == ["000000.bin", f"000000.bin.tmp-{live}", "000000.idx"]


# ------------------------------------------------------------------ item 5
@pytest.fixture(scope="module")
def made_datasets(tmp_path_factory):
    """d1 and d2 in megatron and npy (made once)."""
    docs = corpus_sample("en", 12, every=31, max_chars=400)
    d = tmp_path_factory.mktemp("made")
    src1, src2 = d / "a.jsonl", d / "b.jsonl"
    write_jsonl(src1, docs[:6])
    write_jsonl(src2, docs[6:])
    for fmt in ("megatron", "npy"):
        run([src1], d / fmt / "d1", format=fmt)
        run([src2], d / fmt / "d2", format=fmt)
    return d


@pytest.fixture()
def two_datasets(made_datasets, tmp_path):
    """A copy of the made datasets, for a test to damage."""
    for fmt in ("megatron", "npy"):
        shutil.copytree(made_datasets / fmt, tmp_path / fmt)
    return tmp_path


def merge_cli(*args):
    from gpu_bytepiece.cli import main

    return main(["merge", *map(str, args)])


@pytest.mark.parametrize("fmt,name,cut", [("megatron", "d2.bin", 2), ("megatron", "d2.idx", 8),
                                          ("npy", "d2.ids.npy", 4), ("npy", "d2.offsets.npy", 8)])
def test_merge_refuses_a_truncated_input(two_datasets, capsys, fmt, name, cut):
    """Was: rc 0 and a corrupt dataset (.idx pointers past the end of .bin)."""
    d = two_datasets / fmt
    with open(d / name, "r+b") as f:
        f.truncate(os.path.getsize(d / name) - cut)
    assert merge_cli(d / "d1", d / "d2", "-o", d / "m") == 1
    err = capsys.readouterr().err
    assert f"{d / 'd2'}" in err and "truncated or corrupt" in err, err
    assert not [n for n in os.listdir(d) if n.startswith("m.")]


def test_merge_refuses_duplicates_unless_asked(two_datasets, capsys):
    """Was: ``merge d1 d1`` silently kept one copy."""
    from gpu_bytepiece.pipeline.datasets import read_dataset

    d = two_datasets / "megatron"
    assert merge_cli(d / "d1", d / "d1", "-o", d / "m") == 1
    assert "is given twice" in capsys.readouterr().err
    assert merge_cli(d / "d1", d / "d1", "-o", d / "m", "--allow-duplicates") == 0
    one_ids, one_off = read_dataset(str(d / "d1"))
    ids, off = read_dataset(str(d / "m"))
    assert np.array_equal(np.asarray(ids), np.concatenate([one_ids, one_ids]))
    assert len(off) == 2 * (len(one_off) - 1) + 1
    assert merge_cli(d / "d1.bin", d / "d1.idx", d / "d2", "-o", d / "m2") == 0  # two files of one dataset


def test_merge_removes_temporary_files_of_a_killed_merge(two_datasets):
    """Was: a killed merge's ``*.tmp-PID`` files stayed for ever."""
    d = two_datasets / "megatron"
    gone, live = dead_pid(), os.getppid()
    for name in (f"m.bin.tmp-{gone}", f"m.idx.tmp-{gone}", f"m.bin.tmp-{live}", f"mm.bin.tmp-{gone}"):
        (d / name).write_bytes(b"x" * 100)
    assert merge_cli(d / "d1", d / "d2", "-o", d / "m") == 0
    assert sorted(n for n in os.listdir(d) if ".tmp-" in n) == [f"m.bin.tmp-{live}", f"mm.bin.tmp-{gone}"]


def test_merge_of_mismatched_formats_says_so(two_datasets, capsys):
    """Was: "missing (not a complete megatron dataset)"."""
    assert merge_cli(two_datasets / "megatron" / "d1", two_datasets / "npy" / "d2", "-o",
                     two_datasets / "m") == 1
    assert "d2 is a npy dataset, not megatron: merge datasets of one format" in capsys.readouterr().err


def test_disk_full_is_one_line_naming_the_shard(tmp_path, docs, monkeypatch):
    """Was: a worker's traceback ending in ``OSError: [Errno 28]``, no file named."""
    import errno

    import gpu_bytepiece.pipeline.shard as shard_mod

    real = shard_mod.shard_writer

    def full_disk(*a, **k):
        w = real(*a, **k)

        def close():
            raise OSError(errno.ENOSPC, "No space left on device")
        w.close = close
        return w

    monkeypatch.setattr(shard_mod, "shard_writer", full_disk)
    src = tmp_path / "in.jsonl"
    write_jsonl(src, docs)
    with pytest.raises(PipelineError, match=r"ds.shards/000000.\*: cannot write shard 0 \(No space left on device\)"):
        run([src], tmp_path / "o" / "ds")
    assert [n for n in os.listdir(tmp_path / "o" / "ds.shards") if ".tmp-" in n] == []
