"""The run history's stored row: one stream entry per event, one field `v`, packed and unpacked here.

A row is the event's columns joined by SEP in FIELDS order, VERSION first; text that may
hold newlines (exception messages, tracebacks) is JSON-encoded, so a row is one line and a
page of rows parses as one CSV-like block (the reader hands it to pandas' C parser with
`SEP` and `FIELDS`). Change FIELDS only with a new VERSION: readers skip other versions.
"""

from __future__ import annotations

import json
from typing import Any

from kombu.utils.json import dumps as kombu_dumps

VERSION = "1"  # first column of every row; bump when FIELDS change
SEP = "\x1f"  # ASCII unit separator: JSON escapes it, names never contain it
FIELD = "v"  # the one field of each stream entry
FIELDS = (
    "version", "event", "ts", "task", "id", "parent_id", "root_id", "rerun_of", "queue", "priority",
    "worker", "attempt", "args", "kwargs", "cut", "exc_type", "exc_message", "traceback", "result_size", "eta",
)  # fmt: skip
EVENTS = ("sent", "received", "started", "retried", "succeeded", "failed", "revoked", "rejected")
TEXTS = ("exc_message", "traceback")  # JSON-encoded in the row (they may hold newlines)
CUT_MARK = "…[cut]"  # ends a value cut at history.max_value_bytes


def cut(value: Any, limit: int) -> tuple[str, bool]:
    """JSON of value, cut to `limit` bytes with an explicit marker."""
    return cut_text(kombu_dumps(value), limit)


def cut_text(text: str, limit: int) -> tuple[str, bool]:
    """JSON text already encoded, cut to `limit` bytes with an explicit marker."""
    if len(text) <= limit:
        return text, False
    return text[: max(limit - len(CUT_MARK), 0)] + CUT_MARK, True


def text(value: Any) -> str:
    """A free-text column (exception message, traceback) as it is stored: JSON, or empty."""
    return json.dumps(str(value)) if value not in (None, "") else ""


def pack(fields: dict[str, Any]) -> str:
    """One row from its columns (missing ones empty); `version` is set here."""
    fields["version"] = VERSION
    return SEP.join("" if (v := fields.get(f)) is None else str(v) for f in FIELDS)


def unpack(row: bytes | str) -> dict[str, str]:
    """The columns of one row, as stored (texts still JSON); raises ValueError for another version."""
    values = (row.decode() if isinstance(row, bytes) else row).split(SEP)
    if values[0] != VERSION or len(values) != len(FIELDS):
        raise ValueError(f"history row of format {values[0]!r}, expected {VERSION!r}")
    return dict(zip(FIELDS, values, strict=True))
