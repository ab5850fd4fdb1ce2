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


def _one_static_shared_array_per_block() -> None:
    """Make the CUDA simulator give all threads of a block the same static shared array.

    numba-cuda's simulator (0.30.4, ``simulator/kernelapi.py``
    ``FakeCUDAShared.array``) keys a block's static shared arrays by the
    calling line and allocates on a miss without a lock: ``get``,
    ``np.empty``, store. A thread preempted between the ``get`` and the
    store (the block's threads all start at the kernel's first line, and
    the simulator tests shorten the switch interval) leaves one thread with
    an array of its own, uninitialized: ``kernels.scan``'s block scans then
    read garbage (once in CI: a segment count of 8.4e14, then a
    MemoryError). On a GPU the array is one per block by construction;
    here the check and the store happen under one lock. Dynamic shared
    memory (``shape == 0``) is allocated once per launch and needs nothing.
    """
    import sys
    import threading
    import traceback

    from numba.cuda.simulator import kernelapi

    original = kernelapi.FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, kernelapi.types.Type):
            dtype = kernelapi.numpy_support.as_dtype(dtype)
        caller = traceback.extract_stack(sys._getframe())[-2][0:2]  # the simulator's key: file, line
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = self._allocations[caller] = kernelapi.np.empty(shape, dtype)
        return res

    kernelapi.FakeCUDAShared.array = array


if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    _one_static_shared_array_per_block()


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


_CORPUS_CACHE: dict = {}


def corpus_sample(part: str, n: int | None = None, every: int = 1, max_chars: int | None = None) -> list:
    """``corpus_docs`` memoized for the session (each call otherwise re-reads the file)."""
    key = (part, n, every, max_chars)
    if key not in _CORPUS_CACHE:
        _CORPUS_CACHE[key] = tuple(corpus_docs(part, n=n, every=every, max_chars=max_chars))
    return list(_CORPUS_CACHE[key])


# ------------------------------------------------------------ hypothesis helpers

#: Characters that exercise the text rules: newlines and other line breaks
#: (which stay inside segments), controls, NUL, combining marks and Hangul jamo
#: (NFC composes them), CJK, astral characters, a BOM.
TRICKY_CHARS = (
    list("abcxyz ABC019_.,;:!?'\"()[]{}<>=+-*/\\#@$%&|~`^")
    + ["\n", "\n", "\n", "\r", "\r\n", "\t", "\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]
    + ["\u00a0", "\u3000", "\ufeff", "\u200b", "e\u0301", "\u0301", "\u0323\u0307", "\u212b", "\u1100\u1161", "\u1161"]
    + list("你好世界的一是了中国人民日报，。、《》“”：；！？") + ["é", "ñ", "ß", "Ω", "ж", "ع", "ह", "ก"]
    + ["\U0001F600", "\U0001F468\u200d\U0001F469", "\U0001D11E", "\U00020000", "\U0010FFFD", "\uFFFD"]
)

_SNIPPETS: list = []


def corpus_snippets() -> list:
    """Deterministic slices (1 to ~300 characters) of real documents; [] without ../shared."""
    if not _SNIPPETS and all((CORPUS / f"{p}.jsonl.gz").exists() for p in PARTS):
        for part in PARTS:
            for k, doc in enumerate(corpus_docs(part, n=40, every=37)):
                for j in range(4):
                    a = (k * 7919 + j * 104729) % max(1, len(doc))
                    _SNIPPETS.append(doc[a: a + 1 + (k * 31 + j * 17) % 300])
    return _SNIPPETS


def realistic_text(max_parts: int = 8):
    """A hypothesis strategy: str built from real snippets, tricky and arbitrary characters.

    Never holds a lone surrogate.
    """
    from hypothesis import strategies as st

    chars = st.one_of(st.sampled_from(TRICKY_CHARS), st.characters(blacklist_categories=("Cs",)))
    parts = [st.lists(chars, max_size=30).map("".join)]
    snippets = corpus_snippets()
    if snippets:
        parts.append(st.sampled_from(snippets))
    return st.lists(st.one_of(*parts), max_size=max_parts).map("".join)


def hypothesis_settings(max_examples: int = 200):
    """Deterministic, no deadline, no example database written into the tree."""
    from hypothesis import HealthCheck, settings

    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for a test module (the Ray tests skip when Ray is not installed)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'gpu-bytepiece[ray]' to run the "
                                            "Ray tests")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


#: ``gpu-bytepiece train`` in a child process, in batches of 8 KB with checkpoints every 24 KB (the
#: training kill-and-resume tests: ``GPU_BYTEPIECE_TEST_KILL_AT`` kills it, see ``train/checkpoint.py``).
TRAIN_CHILD = """
import sys
from gpu_bytepiece import config
config.TRAIN_BATCH_BYTES = 8 << 10
config.TRAIN_CHECKPOINT_BYTES = 24 << 10
from gpu_bytepiece.cli import main
sys.exit(main(sys.argv[1:]))
"""


def train_child(*args, kill_at: str | None = None):
    """Run ``gpu-bytepiece train ARGS`` as :data:`TRAIN_CHILD` (killed at ``kill_at``, e.g. ``'pass2:7'``)."""
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("GPU_BYTEPIECE_TEST_KILL_AT", None)
    if kill_at:
        env["GPU_BYTEPIECE_TEST_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-c", TRAIN_CHILD, "train", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def train_corpus(folder: Path, vocab_size: int):
    """A small training corpus (79 KB of zh and en): ``(docs, folder/in.jsonl, the bytes of the model
    trained on it in one process with min_count=2)``."""
    from gpu_bytepiece.train.trainer import Trainer

    docs = corpus_docs("zh", 120, every=131, max_chars=2000) + corpus_docs("en", 12, every=97, max_chars=6000)
    path = folder / "in.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs), encoding="utf-8")
    want = Trainer(max_vocab_size=vocab_size, min_count=2).train(docs, progress=False).save(folder / "want.model")
    return docs, path, Path(want[0]).read_bytes()
