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

from .backend import DeviceError  # noqa: E402
from .model import Model, ModelError, load_model, save_model
from .text import TextError
from .tokenizer import Tokenizer
from .trainer import Trainer

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
