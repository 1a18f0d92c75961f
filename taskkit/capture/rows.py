"""The run history's stored format: rows, and the stream entries that hold them; packed and unpacked here.

A row is one event's columns joined by SEP in FIELDS order, VERSION first; text that may
hold newlines (exception messages, tracebacks) is JSON-encoded, so a row is one line and
rows joined by newlines parse as one CSV-like block (the reader hands it to a C parser with
`SEP` and `FIELDS`). Change FIELDS only with a new VERSION: readers skip other versions.

A stream entry holds one recorder batch: `n` (its row count) and `b` (its rows, newline-
joined), so a million events are a few thousand entries to fetch, not a million. Streams
written before batching hold one row per entry in field `v`; readers take both (`entry_rows`),
so a fleet upgrades in place.
"""

from __future__ import annotations

import json
from typing import Any

from kombu.utils.json import dumps as kombu_dumps

VERSION = "1"  # first column of every row; bump when FIELDS change
SEP = "\x1f"  # ASCII unit separator: JSON escapes it, names never contain it
COUNT, BLOCK = "n", "b"  # the fields of a stream entry: row count, rows
LEGACY = "v"  # the one field of an entry of the first layout (one row per entry)
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


def block(packed: list[str]) -> str:
    """The rows of one stream entry."""
    return "\n".join(packed)


def entry_rows(fields: list[bytes] | dict[bytes, bytes]) -> bytes:
    """The rows of a stream entry of either layout, as one newline-joined block.

    Both layouts put the rows last: `[n, N, b, rows]` and `[v, row]` (a raw XRANGE reply).
    """
    return fields[-1] if isinstance(fields, list) else fields.get(BLOCK.encode(), fields.get(LEGACY.encode(), b""))


def entry_count(fields: list[bytes]) -> int:
    """How many rows a stream entry (raw XRANGE fields) holds."""
    return int(fields[1]) if fields[0] == COUNT.encode() else 1


def unpack(row: bytes | str) -> dict[str, str]:
    """The columns of one row, as stored (texts still JSON); raises ValueError for another version."""
    values = (row.decode() if isinstance(row, bytes) else row).split(SEP)
    if values[0] != VERSION or len(values) != len(FIELDS):
        raise ValueError(f"history row of format {values[0]!r}, expected {VERSION!r}")
    return dict(zip(FIELDS, values, strict=True))
