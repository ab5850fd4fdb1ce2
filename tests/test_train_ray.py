"""Training on Ray (``Trainer.train(ray=...)``, ``train --ray``): the same model byte for byte.

One local Ray (2 CPUs) for the module; a tiny corpus in small batches, so
both corpus passes run as several map tasks on the 2 actors. Skips when Ray
is not installed (``pip install 'gpu-bytepiece[ray]'``).
"""

from __future__ import annotations

import signal

import pytest
from conftest import train_child, train_corpus

pytest.importorskip("ray", reason="Ray is not installed: pip install 'gpu-bytepiece[ray]' to run the Ray tests")

from gpu_bytepiece import config  # noqa: E402
from gpu_bytepiece.cli import main  # noqa: E402
from gpu_bytepiece.train.trainer import Trainer  # noqa: E402

# a small budget: count runs spill and the n-gram table the actors get is memory-mapped on the driver
ARGS = ["--vocab-size", "600", "--min-count", "2", "-q", "--workers", "1", "--memory-budget", "256K"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The corpus (a list, and a JSONL file) and the single-process model's bytes."""
    return train_corpus(tmp_path_factory.mktemp("train_ray"), 600)


def test_api_on_ray_gives_the_same_model(local_ray, data, tmp_path, monkeypatch):
    # pruning's splits in small batches too, so that each round's run on both actors
    monkeypatch.setattr(config, "TRAIN_SPLIT_BATCH_BYTES", 2 << 10)
    docs, _, want = data
    t = Trainer(max_vocab_size=600, min_count=2).train(docs, progress=False, batch_bytes="8K", ray=True,
                                                       memory_budget="256K")
    assert t.stats["device"] == "ray: 2 cpu actors; pruning: ray"
    # the driver's reduce spilled n-gram count runs, and the n-gram table the actors got was memory-mapped
    assert t.stats["n_ngram_spills"] > 0 and t.stats["ngram_table_mapped"]
    assert t.stats["n_docs"] == len(docs) and t.stats["n_bytes"] > 8 * (8 << 10)  # many batches on 2 actors
    assert t.stats["n_split_batches_on_ray"] > 20
    t.save(tmp_path / "m.model")
    assert (tmp_path / "m.model").read_bytes() == want


def test_cli_on_ray_resumes_a_killed_single_process_run(local_ray, data, tmp_path, monkeypatch, capsys):
    # killed in pass 1 after batch 5 (checkpointed after batch 3), resumed with --ray: pass 1's
    # remaining batches, pass 2 and its mid-pass checkpoints run on the actors
    _, inp, want = data
    out = tmp_path / "m.model"
    r = train_child(inp, "-o", out, *ARGS, kill_at="pass1:5")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (tmp_path / "m.model.work" / "pass1.json").exists()
    monkeypatch.setattr(config, "TRAIN_BATCH_BYTES", 8 << 10)
    monkeypatch.setattr(config, "TRAIN_CHECKPOINT_BYTES", 24 << 10)
    assert main(["train", str(inp), "-o", str(out), *ARGS, "--ray"]) == 0
    err = capsys.readouterr().err
    assert "(ray: 2 cpu actors; pruning: ray)" in err and "pass1_batches 3" in err, err
    assert out.read_bytes() == want
    assert not (tmp_path / "m.model.work").exists()


@pytest.mark.parametrize("kill_at, saved, resumed", [
    # killed after pass 2's batch 7 (checkpointed after batch 6, with batches in flight on the actors)
    ("pass2:7", "pass2.json", "ngrams True, pass2_batches 6 (counted now: pass2 2 batches)"),
    # killed at pruning round 3 (its splits ran on the actors; checkpointed after round 2)
    ("prune:3", "prune.npz", "ngrams True, pieces True, prune_rounds 2"),
], ids=["pass2", "prune"])
def test_a_run_on_ray_killed_resumes_on_ray(local_ray, data, tmp_path, monkeypatch, capsys, kill_at, saved, resumed):
    # a child attached to this module's Ray by its address (--ray HOST:PORT), killed, resumed here
    _, inp, want = data
    out = tmp_path / "m.model"
    address = local_ray.get_runtime_context().gcs_address
    r = train_child(inp, "-o", out, *ARGS, "--ray", address, kill_at=kill_at)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (tmp_path / "m.model.work" / saved).exists()
    monkeypatch.setattr(config, "TRAIN_BATCH_BYTES", 8 << 10)
    monkeypatch.setattr(config, "TRAIN_CHECKPOINT_BYTES", 24 << 10)
    assert main(["train", str(inp), "-o", str(out), *ARGS, "--ray"]) == 0
    err = capsys.readouterr().err
    assert resumed in err and "(ray: 2 cpu actors; pruning: ray)" in err, err
    assert out.read_bytes() == want


def test_an_unreachable_cluster_fails_at_once_in_one_line(data, tmp_path):
    # a child, where Ray is not initialized (Ray itself would retry for minutes)
    _, inp, _ = data
    r = train_child(inp, "-o", tmp_path / "m.model", *ARGS, "--ray", "127.0.0.1:1")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "gpu-bytepiece train: error: cannot reach a Ray cluster at '127.0.0.1:1' (127.0.0.1:1: Connection "
        "refused); give the head node's HOST:PORT (ray start --head prints it), or --ray alone for a local Ray"]
    assert not (tmp_path / "m.model").exists() and not (tmp_path / "m.model.work").exists()


def test_cuda_actors_on_a_cluster_without_gpus_are_refused(local_ray, data):
    # (actors asking for a GPU would wait for one forever)
    with pytest.raises(RuntimeError, match=r"^device 'cuda' asks for a GPU per Ray actor, but the Ray cluster "
                                           r"has no GPUs; use device 'cpu' or 'auto'$"):
        Trainer(max_vocab_size=600).train(data[0], progress=False, ray=True, device="cuda")


def test_actors_read_the_ngram_table_from_the_object_store_without_a_copy(local_ray, data):
    # the n-gram model as pass 2 sends it (ray.put once), read back as an actor gets it: read-only
    # views of the object store, which the actor keeps (the actors of a node share one table)
    # and runs the Viterbi on, with the same pieces as from writable copies
    import numpy as np

    from gpu_bytepiece.text import pack_texts
    from gpu_bytepiece.train.corpus import Corpus
    from gpu_bytepiece.train.engines import make_engine
    from gpu_bytepiece.train.ngrams import count_ngrams
    from gpu_bytepiece.train.ray import TrainActor

    docs = data[0]
    tr = Trainer(min_count=2)
    ng = count_ngrams(tr, Corpus(docs, 1 << 16, None), make_engine(tr, False, 0), 1 << 30, None, False)
    arrays = ng.arrays()
    shared = local_ray.get(local_ray.put(arrays))
    assert not shared["ht"].flags.writeable
    params = {k: getattr(tr, k) for k in ("order", "isolate_digits", "ensure_unicode")}
    actor, copied = TrainActor(params, "cpu", 1), TrainActor(params, "cpu", 1)
    actor.load_ngrams(shared)
    copied.load_ngrams({k: np.array(v) for k, v in arrays.items()})
    for name in ("ht", "lp1", "lp2"):
        assert np.shares_memory(getattr(actor.ngrams, name), shared[name]), name
    data_, offsets = pack_texts(docs)
    got, want = actor.count_pieces(data_, offsets), copied.count_pieces(data_, offsets)
    assert len(got[0]) > 1000 and len(got[2]) > 0  # short pieces, and some long ones
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
