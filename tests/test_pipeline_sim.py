"""The encode pipeline driving the CUDA backend, under Numba's CUDA simulator.

Runs only with ``NUMBA_ENABLE_CUDASIM=1`` (``./test.sh sim``); tiny inputs.
``--device cuda`` must give the bytes ``--device cpu`` gives, sampling included.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("CUDA simulator tests: run with NUMBA_ENABLE_CUDASIM=1 (./test.sh sim)", allow_module_level=True)

from conftest import corpus_docs  # noqa: E402

from gpu_bytepiece import config  # noqa: E402
from gpu_bytepiece.pipeline import EncodeOptions, encode  # noqa: E402

pytestmark = [pytest.mark.sim, pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize("alpha", [-1.0, 0.1])
def test_cuda_device_gives_the_cpu_bytes(tmp_path, alpha):
    texts = corpus_docs("zh", 3, every=400, max_chars=60) + corpus_docs("code", 2, every=300, max_chars=120)
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    out = {}
    for dev in ("cpu", "cuda"):
        encode(EncodeOptions(inputs=[str(src)], output=str(tmp_path / dev / "ds"), format="megatron", device=dev,
                             workers=1, append_eos=True, alpha=alpha, seed=5, shard_bytes=400, progress=False))
        out[dev] = [(tmp_path / dev / f"ds{e}").read_bytes() for e in (".bin", ".idx")]
    assert out["cpu"] == out["cuda"]
