"""Ray: ``tokenize_dataset`` (Ray Data map_batches) and ``encode --ray`` on a local Ray.

Skips when Ray is not installed (``pip install 'gpu-bytepiece[ray]'``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import corpus_docs

pytest.importorskip("ray", reason="Ray is not installed: pip install 'gpu-bytepiece[ray]' to run the Ray tests")
pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'ray[data]'")

from gpu_bytepiece import Tokenizer  # noqa: E402
from gpu_bytepiece.pipeline import EncodeOptions, PipelineError, encode, read_dataset  # noqa: E402


@pytest.fixture(scope="module")
def docs():
    return corpus_docs("zh", 30, every=211) + corpus_docs("en", 8, every=150, max_chars=5000) \
        + corpus_docs("code", 8, every=150, max_chars=5000)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_tokenize_dataset_adds_exact_ids(local_ray, docs):
    import pyarrow as pa

    from gpu_bytepiece.ray import tokenize_dataset

    table = pa.table({"n": list(range(len(docs))), "text": docs})
    ds = local_ray.data.from_arrow([table.slice(i, 12) for i in range(0, len(docs), 12)])  # several blocks
    out = tokenize_dataset(ds, device="cpu", concurrency=2, batch_size=7, add_eos=True)
    rows = sorted(out.take_all(), key=lambda r: r["n"])
    want = Tokenizer(device="cpu").encode_batch(docs, add_eos=True)
    assert [r["n"] for r in rows] == list(range(len(docs)))
    assert [list(r["ids"]) for r in rows] == want
    assert [r["text"] for r in rows] == docs


def test_encode_on_ray_equals_single_process(local_ray, tmp_path, docs):
    src = tmp_path / "d.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for t in docs:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    common = dict(inputs=[str(src)], format="megatron", shard_bytes=20_000, batch_bytes=8_000, append_eos=True,
                  device="cpu", progress=False)
    local = encode(EncodeOptions(output=str(tmp_path / "local" / "ds"), workers=1, **common))
    on_ray = encode(EncodeOptions(output=str(tmp_path / "ray" / "ds"), workers=2, ray="auto", **common))
    assert on_ray["shards"] == local["shards"] > 2 and on_ray["docs"] == len(docs)
    for ext in (".bin", ".idx", ".manifest.json"):
        assert (tmp_path / "ray" / f"ds{ext}").read_bytes() == (tmp_path / "local" / f"ds{ext}").read_bytes()
    ids, offsets = read_dataset(str(tmp_path / "ray" / "ds"), "megatron")
    want = Tokenizer(device="cpu").encode_to_numpy(docs, add_eos=True)
    np.testing.assert_array_equal(np.asarray(ids), want[0])
    np.testing.assert_array_equal(offsets, want[1])


def test_encode_on_ray_refuses_a_bad_device_as_locally(local_ray, tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text('{"text": "a document"}\n', encoding="utf-8")
    with pytest.raises(PipelineError, match=r"--device must be auto, cpu, cuda or cuda:N, got 'tpu'"):
        encode(EncodeOptions(inputs=[str(src)], output=str(tmp_path / "o"), device="tpu", ray="auto",
                             progress=False))
