"""Task results: read one, and clean up results that would otherwise never expire."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from celery.result import AsyncResult

from .app import TaskkitApp
from .broker import redis_client

CLEANUP_BATCH = 500  # keys per SCAN page and per pipeline


def result(app: TaskkitApp, task_id: str) -> dict[str, Any]:
    """State, value or error, progress and metadata of one task, as plain data."""
    res = AsyncResult(task_id, app=app)
    meta = res.backend.get_task_meta(task_id)
    state = meta.get("status", "PENDING")
    info = meta.get("result")
    out: dict[str, Any] = {
        "id": task_id,
        "state": state,
        "task": meta.get("name"),
        "queue": meta.get("queue"),
        "worker": meta.get("worker"),
        "retries": meta.get("retries"),
        "date_done": meta.get("date_done"),
    }
    if state == "SUCCESS":
        out["result"] = info
    elif state in ("FAILURE", "RETRY") and isinstance(info, BaseException):
        out["error"] = f"{type(info).__name__}: {info}"
        out["traceback"] = meta.get("traceback")
    elif state == "PROGRESS":
        out["progress"] = info
    return {k: v for k, v in out.items() if v is not None}


def cleanup_results(app: TaskkitApp, *, older_than: float | None = None) -> dict[str, int]:
    """Delete stored results that carry no TTL and are older than `older_than` seconds.

    Redis expires results written with result_expires by itself; this catches the ones
    written without (result_expires=None, another client), which would pile up forever.
    """
    max_age = app.settings.broker.result_expires if older_than is None else older_than
    cutoff = time.time() - max_age
    scanned = deleted = 0
    with redis_client(app) as client:
        for batch in _batches(client.scan_iter(match=app.keys.result_pattern(), count=CLEANUP_BATCH)):
            scanned += len(batch)
            pipe = client.pipeline(transaction=False)
            for key in batch:
                pipe.ttl(key)
            forever = [k for k, ttl in zip(batch, pipe.execute(), strict=False) if ttl == -1]
            if not forever:
                continue
            stale = [k for k, raw in zip(forever, client.mget(forever), strict=False) if _done_before(raw, cutoff)]
            if stale:
                deleted += client.delete(*stale)
    return {"scanned": scanned, "deleted": deleted}


def _batches(it: Any) -> Any:
    batch: list[Any] = []
    for item in it:
        batch.append(item)
        if len(batch) == CLEANUP_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _done_before(raw: bytes | None, cutoff: float) -> bool:
    try:
        done = datetime.fromisoformat(json.loads(raw or b"{}")["date_done"])
        return done.replace(tzinfo=done.tzinfo or UTC).timestamp() < cutoff
    except (ValueError, TypeError, KeyError):
        return False  # not a result we understand: leave it alone
