"""The terabyte pipeline behind ``gpu-bytepiece encode`` / ``merge``.

- :mod:`.readers`: inputs (text, JSONL, Parquet; compressed; stdin), shard plans, streaming reads
- :mod:`.writers`: Megatron / NumPy / Parquet / JSONL datasets: write, join (merge), read back
- :mod:`.manifest`: the job manifest (resume, refusing another job's output)
- :mod:`.runner`: the job: workers, progress, assembly
- :mod:`.cli`: the ``encode`` and ``merge`` subcommands
- :mod:`.ray`: Ray Data ``map_batches`` and ``encode --ray``

Python use::

    from gpu_bytepiece.pipeline import EncodeOptions, encode, read_dataset
    summary = encode(EncodeOptions(inputs=["data/"], output="out/train", format="megatron", append_eos=True))
    ids, offsets = read_dataset("out/train", "megatron")
"""

from .errors import REASONS, DataError, JobConflict, PipelineError
from .runner import EncodeOptions, encode
from .writers import FORMATS, iter_documents, merge_datasets, read_dataset, read_megatron_index

__all__ = [
    "EncodeOptions", "encode", "merge_datasets", "read_dataset", "iter_documents", "read_megatron_index",
    "FORMATS", "REASONS", "DataError", "JobConflict", "PipelineError",
]
