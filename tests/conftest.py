"""Shared fixtures: the real models and corpus in ../shared (read-only)."""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPU_BYTEPIECE_SHARED", ROOT.parent / "shared"))
MODELS = SHARED / "models"
CORPUS = SHARED / "corpus"
MODEL_NAMES = ("bytepiece.plus.40k.model", "bytepiece_80k.model")
PARTS = ("zh", "en", "code")


def shared_model(name: str) -> Path:
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the real BytePiece models live in ../shared/models beside the project")
    return path


def corpus_docs(part: str, n: int | None = None, every: int = 1, max_chars: int | None = None) -> list:
    """Documents of ``../shared/corpus/{part}.jsonl.gz``: every ``every``-th, at most ``n``."""
    path = CORPUS / f"{part}.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} is absent: the real text corpus lives in ../shared/corpus beside the project")
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in itertools.islice(f, 0, None, every):
            text = json.loads(line)["text"]
            out.append(text if max_chars is None else text[:max_chars])
            if n is not None and len(out) >= n:
                break
    return out


@pytest.fixture(scope="session", params=MODEL_NAMES)
def model_path(request) -> Path:
    return shared_model(request.param)


@pytest.fixture(scope="session")
def plus40k_path() -> Path:
    return shared_model("bytepiece.plus.40k.model")


_TOKENIZERS: dict = {}


def cpu_tokenizer(path):
    """One CPU Tokenizer per model per test session (building costs ~0.3 s)."""
    from gpu_bytepiece import Tokenizer

    key = str(path)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = Tokenizer(path, device="cpu", seed=1234)
    return _TOKENIZERS[key]


def reference_tokenizer(path):
    """The reference bytepiece==0.6.3 Tokenizer (installed by scripts/setup.sh)."""
    bytepiece = pytest.importorskip(
        "bytepiece", reason="the reference bytepiece==0.6.3 is not installed: run scripts/setup.sh"
    )
    key = ("ref", str(path))
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = bytepiece.Tokenizer(str(path))
    return _TOKENIZERS[key]
