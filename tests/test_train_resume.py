"""Resumable training: a real run killed with SIGKILL in each corpus pass and
in pruning, rerun with the same arguments, writes the same model byte for byte
(and does not redo the checkpointed work); changed inputs or parameters are
refused, ``--overwrite`` starts again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import train_child, train_corpus

from gpu_bytepiece.train.trainer import Trainer

# a small budget: count runs spill and the n-gram table is memory-mapped (both checkpointed)
ARGS = ["--vocab-size", "800", "--min-count", "2", "-q", "--workers", "1", "--memory-budget", "256K"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    _, path, want = train_corpus(tmp_path_factory.mktemp("resume"), 800)
    return path, want


def _train(inp, out, *extra, kill_at=None):
    # a real CLI run in a child, with small batches and checkpoints: 8 batches of 8 KB, checkpoints after 3, 6, 8
    return train_child(inp, "-o", out, *ARGS, *extra, kill_at=kill_at)


@pytest.mark.parametrize("kill_at, left, resumed", [
    ("pass1:5", "pass1.json", "pass1_batches 3"),
    ("pass2:7", "pass2.json", "pass2_batches 6"),
    ("prune:3", "prune.npz", "prune_rounds 2"),
], ids=["pass1", "pass2", "prune"])
def test_kill_and_resume_gives_the_same_model(data, tmp_path, kill_at, left, resumed):
    inp, want = data
    out = tmp_path / "m.model"
    r = _train(inp, out, kill_at=kill_at)
    assert r.returncode == -signal.SIGKILL, r.stderr
    work = tmp_path / "m.model.work"
    assert not out.exists() and (work / left).exists()
    r = _train(inp, out)
    assert r.returncode == 0, r.stderr
    assert resumed in r.stderr
    assert out.read_bytes() == want
    assert not work.exists()  # removed once the model is saved


def test_changed_parameters_or_inputs_are_refused(data, tmp_path):
    inp, want = data
    out = tmp_path / "m.model"
    assert _train(inp, out, kill_at="pass2:2").returncode == -signal.SIGKILL
    r = _train(inp, out, "--order", "5")
    assert r.returncode == 2 and "holds checkpoints of another training (params.order: 6 there, 5 now)" in r.stderr
    changed = tmp_path / "in.jsonl"
    changed.write_bytes(inp.read_bytes().replace("的".encode(), "了".encode(), 1))
    r = _train(changed, out, "--work-dir", str(tmp_path / "m.model.work"))
    assert r.returncode == 2 and "holds checkpoints of another training (inputs.inputs" in r.stderr
    r = _train(inp, out, "--order", "5", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert "resumed" not in r.stderr and out.read_bytes() != want


def test_one_shot_iterator_resumes(data, tmp_path):
    """A generator is read once and spilled to the work folder; a killed run resumes from the spill."""
    inp, want = data
    code = ("import json, sys\nfrom gpu_bytepiece import config\nconfig.TRAIN_CHECKPOINT_BYTES = 24 << 10\n"
            "from gpu_bytepiece.train.trainer import Trainer\n"
            "docs = (json.loads(l)['text'] for l in open(sys.argv[1], encoding='utf-8'))\n"
            "t = Trainer(max_vocab_size=800, min_count=2).train(docs, progress=False, batch_bytes='8K', "
            "work_dir=sys.argv[2])\n"
            "t.save(sys.argv[3]); print(json.dumps(t.stats['resumed']))\n")
    env = dict(os.environ)
    run = [sys.executable, "-c", code, str(inp), str(tmp_path / "w"), str(tmp_path / "m.model")]
    for kill_at in ("pass1:4", "pass2:6"):
        env["GPU_BYTEPIECE_TEST_KILL_AT"] = kill_at
        assert subprocess.run(run, env=env, capture_output=True).returncode == -signal.SIGKILL
    del env["GPU_BYTEPIECE_TEST_KILL_AT"]
    r = subprocess.run(run, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ngrams": True, "pass2_batches": 6}
    assert (tmp_path / "m.model").read_bytes() == want
