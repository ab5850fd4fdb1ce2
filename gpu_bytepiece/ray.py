"""``gpu_bytepiece.ray``: Ray integration (re-exported from :mod:`gpu_bytepiece.pipeline.ray`).

Needs ``pip install 'gpu-bytepiece[ray]'``; importing this module does not
import Ray (its functions do).
"""

from .pipeline.ray import ShardActor, TokenizeBatch, run_shards_ray, tokenize_dataset

__all__ = ["TokenizeBatch", "tokenize_dataset", "ShardActor", "run_shards_ray"]
