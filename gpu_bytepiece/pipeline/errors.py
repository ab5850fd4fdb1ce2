"""Errors of the encode pipeline, and the bad-data reasons it counts."""

from __future__ import annotations

__all__ = ["PipelineError", "JobConflict", "DataError", "REASONS"]

#: Why a record can be bad. ``--on-error skip`` counts skipped records per
#: reason (in the manifest and the final summary); ``fail`` stops at the first.
REASONS = {
    "malformed_json": "the line is not valid JSON",
    "not_an_object": "the JSON value is not an object",
    "missing_text": "the text field is missing",
    "null_text": "the text field is null",
    "text_not_string": "the text field is not a string",
    "invalid_utf8": "the bytes are not valid UTF-8",
    "lone_surrogate": "the text holds a lone surrogate (no UTF-8 encoding)",
    "too_deep": "the JSON is nested deeper than the reader's limit",
    "too_large": "the record (a line) is larger than --max-record-bytes",
}


class PipelineError(RuntimeError):
    """A job cannot run as asked (bad arguments, unreadable input, ...)."""


class JobConflict(PipelineError):
    """The output belongs to another job (different inputs or parameters)."""


class DataError(PipelineError):
    """A bad record under ``--on-error fail``: where it is and why.

    Attributes
    ----------
    path : str
        The input file (``-`` for stdin).
    line : int or None
        1-based line (text, JSONL) or None.
    row : int or None
        0-based row (Parquet) or None.
    reason : str
        One of :data:`REASONS`.
    detail : str
        What exactly is wrong.
    """

    def __init__(self, path: str, reason: str, detail: str = "", *, line: int | None = None,
                 row: int | None = None, offset: int | None = None):
        self.path, self.reason, self.detail = path, reason, detail
        self.line, self.row, self.offset = line, row, offset
        super().__init__(self._message())

    def where(self) -> str:
        if self.line is not None:
            return f"{self.path}:{self.line}"
        if self.row is not None:
            return f"{self.path}: row {self.row}"
        if self.offset is not None:
            return f"{self.path}: byte {self.offset}"
        return self.path

    def _message(self) -> str:
        text = f"{self.where()}: {self.reason} ({REASONS.get(self.reason, '?')})"
        return f"{text}: {self.detail}" if self.detail else text

    def to_dict(self) -> dict:
        return {"path": self.path, "line": self.line, "row": self.row, "offset": self.offset,
                "reason": self.reason, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict) -> "DataError":
        return cls(d["path"], d["reason"], d.get("detail", ""), line=d.get("line"), row=d.get("row"),
                   offset=d.get("offset"))

    def __reduce__(self):
        return (DataError.from_dict, (self.to_dict(),))
