"""The terabyte pipeline behind ``gpu-bytepiece encode`` / ``merge`` (and ``train``'s inputs).

- :mod:`.inputs`: finding inputs (files, directories, globs, stdin; kinds, compression), shard plans
- :mod:`.streams`: input byte streams (decompressed), runs of whole lines, fragment cuts
- :mod:`.readers`: one reader per input format (JSONL, text lines, text files, Parquet); a shard as batches
- :mod:`.documents`: inputs as ``str`` documents (:func:`iter_texts`, :class:`InputTexts`), for training
- :mod:`.formats`: output formats: names, suffixes, Megatron and npy layouts
- :mod:`.writers`: one writer per output format (Megatron, NumPy, Parquet, JSONL)
- :mod:`.datasets`: reading datasets back, joining them (``merge``)
- :mod:`.manifest`: the job manifest (resume, refusing another job's output)
- :mod:`.shard`: encoding one shard (read, tokenize, write)
- :mod:`.workers`: worker processes, a tokenizer in each
- :mod:`.progress`: the progress bar
- :mod:`.runner`: the job: plan, resume, run the shards, assemble
- :mod:`.ray`: Ray Data ``map_batches`` and ``encode --ray``
- :mod:`.cli`: the ``encode`` and ``merge`` subcommands

Imports go one way: cli -> runner -> ray -> workers -> shard -> readers /
writers -> inputs / streams / formats -> errors (and :mod:`gpu_bytepiece.files`).

Python use::

    from gpu_bytepiece.pipeline import EncodeOptions, encode, read_dataset
    summary = encode(EncodeOptions(inputs=["data/"], output="out/train", format="megatron", append_eos=True))
    ids, offsets = read_dataset("out/train", "megatron")
"""

from .datasets import iter_documents, merge_datasets, read_dataset, read_megatron_index
from .documents import InputTexts, iter_texts
from .errors import REASONS, DataError, JobConflict, PipelineError
from .formats import FORMATS
from .runner import EncodeOptions, encode

__all__ = [
    "EncodeOptions", "encode", "merge_datasets", "read_dataset", "iter_documents", "read_megatron_index",
    "iter_texts", "InputTexts", "FORMATS", "REASONS", "DataError", "JobConflict", "PipelineError",
]
