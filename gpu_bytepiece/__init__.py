"""gpu-bytepiece: BytePiece's byte-level Unigram tokenizer, exact, fast, on CPUs and GPUs.

Switch from BytePiece with an import change::

    from gpu_bytepiece import Tokenizer
    tok = Tokenizer()                      # bundled bytepiece.plus.40k
    ids = tok.encode("hello world")
    ids, offsets = tok.encode_to_numpy(["doc one", "doc two"])
"""

from .backend import DeviceError
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
