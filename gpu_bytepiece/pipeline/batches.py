"""What reading a shard gives: :class:`Batch` es of documents, and :class:`ShardStats`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import DataError

__all__ = ["Batch", "ShardStats"]


@dataclass
class ShardStats:
    """What reading a shard saw: documents, bad records per reason, samples."""

    docs: int = 0
    text_bytes: int = 0
    blank_lines: int = 0
    skipped: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)
    reads: list = field(default_factory=list)  # [path, start, length, blake2b] per input read (Source.finish)

    MAX_SAMPLES = 10

    def skip(self, err: DataError) -> None:
        self.skipped[err.reason] = self.skipped.get(err.reason, 0) + 1
        if len(self.samples) < self.MAX_SAMPLES:
            self.samples.append(err.to_dict())


@dataclass
class Batch:
    """Pieces of documents to tokenize together.

    ``texts`` are pieces (str list or pyarrow string array). A piece is a
    whole document unless ``starts``/``ends`` (bool arrays) say it is not the
    first/last piece of its document. ``first_continues``: the first piece
    continues the writer's open document; ``last_open``: the last document
    goes on in the next batch; ``abort_open``: drop the writer's open
    document first (it turned out bad). ``table``: the rows for Parquet
    output (one per piece). ``input_bytes``: progress in input-file bytes.
    """

    texts: object
    starts: np.ndarray | None = None
    ends: np.ndarray | None = None
    first_continues: bool = False
    last_open: bool = False
    abort_open: bool = False
    table: object = None
    input_bytes: int = 0

    def __len__(self) -> int:
        return len(self.texts)
