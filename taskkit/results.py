"""Task results: read one, wait for one, and clean up results that would otherwise never expire."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery.result import AsyncResult, GroupResult, ResultSet

from .app import TaskkitApp, get_app
from .broker import REDIS_ERRORS, redis_client, unavailable
from .errors import WaitTimeout
from .kinds import DURATION, TIMEOUT, refuse

CLEANUP_BATCH = 500  # keys per SCAN page and per pipeline
WAIT_POLL = 0.2  # seconds between reads of a result being waited for
DONE = ("SUCCESS", "FAILURE", "REVOKED", "REJECTED")


def result(task_id: str, *, app: TaskkitApp | None = None) -> dict[str, Any]:
    """State, value or error, progress and metadata of one task, as plain data."""
    app = app or get_app()
    try:
        meta = AsyncResult(task_id, app=app).backend.get_task_meta(task_id)
    except REDIS_ERRORS as exc:
        raise unavailable(app, exc) from None
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


def wait(
    task_id: str,
    *,
    timeout: float = 60.0,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    app: TaskkitApp | None = None,
) -> dict[str, Any]:
    """Block until the task is done and return `result()`; raises WaitTimeout after `timeout` seconds.

    `on_progress(info)` is called with the task's `result()` each time its state or progress
    changes (PROGRESS reports included), the last time with the finished task's.
    """
    app = app or get_app()
    timeout = refuse("timeout", timeout, TIMEOUT)
    deadline, last = time.monotonic() + timeout, None
    while True:
        info = result(task_id, app=app)
        seen = (info["state"], json.dumps(info.get("progress"), default=str))
        if on_progress is not None and seen != last:
            on_progress(info)
        last = seen
        if info["state"] in DONE:
            return info
        if time.monotonic() >= deadline:
            raise WaitTimeout(task_id, timeout)
        time.sleep(WAIT_POLL)


@dataclass(frozen=True)
class Progress:
    """Where a task or a group of tasks stands: plain data."""

    id: str
    done: float
    total: float | None
    state: str  # PENDING … SUCCESS / FAILURE, or the group's: RUNNING / SUCCESS / FAILURE
    error: str | None = None
    result: Any = None  # a single task's result, or a chord's callback result
    rows: list[Any] = field(default_factory=list)  # finished members' results (groups and chords)

    @property
    def finished(self) -> bool:
        return self.state in DONE

    @property
    def percent(self) -> float | None:
        return round(100.0 * self.done / self.total, 1) if self.total else None


def _members(res: Any) -> tuple[ResultSet | None, AsyncResult | None]:
    """(the group to count, the chord's callback or None)."""
    if isinstance(res, ResultSet):
        return res, None
    if isinstance(getattr(res, "parent", None), GroupResult):
        return res.parent, res  # a chord: the header group, then the callback
    return None, None


def progress_of(res: Any, *, app: TaskkitApp | None = None) -> Progress:
    """Where an AsyncResult, a group or a chord stands: done / total, state, error, the finished members' results.

    A task counts its own `progress()` reports; a group or chord counts finished members
    (one result read per member not yet done) and, for a chord, waits for the callback too.
    """
    app = app or getattr(res, "app", None) or get_app()
    group, callback = _members(res)
    if group is None:
        info = result(res.id, app=app)
        p = info.get("progress") or {}
        state = info["state"]
        done, total = (1, 1) if state == "SUCCESS" else (p.get("done", 0), p.get("total"))
        return Progress(res.id, done, total, state, info.get("error"), info.get("result"))
    try:
        finished = [r for r in group.results if r.ready()]
    except REDIS_ERRORS as exc:
        raise unavailable(app, exc) from None
    failed = next((r for r in finished if r.failed()), None)
    rows = [r.result for r in finished if r.successful()]
    total = len(group.results)
    if failed is not None:
        state, error = "FAILURE", f"{failed.id}: {type(failed.result).__name__}: {failed.result}"
    elif len(finished) == total and (callback is None or callback.ready()):
        state, error = ("FAILURE", str(callback.result)) if callback is not None and callback.failed() else ("SUCCESS", None)
    else:
        state, error = "RUNNING", None
    final = callback.result if callback is not None and state == "SUCCESS" else None
    return Progress(getattr(res, "id", "") or "", len(finished), total, state, error, final, rows)


def cleanup_results(*, older_than: float | str | None = None, app: TaskkitApp | None = None) -> dict[str, int]:
    """Delete stored results that carry no TTL and are older than `older_than` (seconds or "7d").

    Redis expires results written with result_expires by itself; this catches the ones
    written without (result_expires=None, another client), which would pile up forever.
    """
    app = app or get_app()
    max_age = app.settings.broker.result_expires if older_than is None else refuse("older_than", older_than, DURATION)
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
