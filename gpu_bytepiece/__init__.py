"""gpu-bytepiece: BytePiece's byte-level Unigram tokenizer, exact, fast, on CPUs and GPUs.

Switch from BytePiece with an import change::

    from gpu_bytepiece import Tokenizer
    tok = Tokenizer()                      # bundled bytepiece.plus.40k
    ids = tok.encode("hello world")
    ids, offsets = tok.encode_to_numpy(["doc one", "doc two"])
"""

import os as _os

# Idle OpenMP workers busy-wait by default; between parallel regions they take
# the CPU from threads packing text in Python (measured: +40% CPU time, 2
# threads on 2 cores). Read by libgomp when Numba's OpenMP threading
# layer loads it, so it must be set before the first parallel call; an
# explicit OMP_WAIT_POLICY in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Fork safety (issue 10): make the tbb wheel's library loadable, so that
# Numba picks its TBB threading layer (thread- and fork-safe) over GNU OpenMP
# (not fork-safe). See gpu_bytepiece.forksafe.
from .forksafe import load_tbb as _load_tbb

_load_tbb()

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:  # pragma: no cover
    from .device import DeviceError
    from .model import Model, ModelError, load_model, save_model
    from .text import TextError
    from .tokenizer import Tokenizer
    from .train.trainer import Trainer

# The public names load on first use (PEP 562): ``import gpu_bytepiece`` and
# the CLI's argument parsing stay cheap, and a job that only tokenizes never
# imports the trainer.
_LAZY = {
    "Tokenizer": ".tokenizer",
    "Trainer": ".train.trainer",
    "Model": ".model",
    "ModelError": ".model",
    "load_model": ".model",
    "save_model": ".model",
    "TextError": ".text",
    "DeviceError": ".device",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "Tokenizer",
    "Trainer",
    "Model",
    "ModelError",
    "TextError",
    "DeviceError",
    "load_model",
    "save_model",
    "__version__",
]
