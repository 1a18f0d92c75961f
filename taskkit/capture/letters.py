"""Dead letters' stored form: one hash per failed task, indexed per queue by failure time.

Written here when a task fails for good (or names a task no worker has), read back by
`taskkit.deadletters`; both sides use `store` and `decode`, so the format lives once.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..broker import redis_client
from ..errors import TaskkitError
from .recorder import recorded_call

FLOATS = ("failed_at", "claimed_at", "replayed_at")
INTEGERS = ("priority", "attempts")


def store(app: Any, entry: dict[str, Any]) -> None:
    """Write one dead letter and its indexes in one round trip."""
    keys = app.keys
    with redis_client(app) as client:
        pipe = client.pipeline(transaction=True)
        pipe.hset(keys.deadletter(entry["id"]), mapping={k: v for k, v in entry.items() if v is not None})
        pipe.zadd(keys.deadletter_queue(entry["queue"]), {entry["id"]: entry["failed_at"]})
        pipe.sadd(keys.deadletter_queues(), entry["queue"])
        pipe.execute()


def decode(raw: dict[bytes, bytes]) -> dict[str, Any]:
    """A stored hash → plain data: args/kwargs parsed, times and counts as numbers, `replayed`."""
    entry: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    for key in ("args", "kwargs"):
        entry[key] = json.loads(entry[key])
    for key in FLOATS:
        if key in entry:
            entry[key] = float(entry[key])
    for key in INTEGERS:
        if key in entry:
            entry[key] = int(entry[key])
    entry["replayed"] = "replayed_at" in entry
    return entry


def from_failure(task: Any, task_id: str, exc: BaseException | None, args: Any, kwargs: Any, einfo: Any) -> dict[str, Any]:
    """The dead letter of a task that failed for good (retries exhausted, time limit, Reject, …)."""
    queue, priority = _queue_and_priority(task, task_id)
    request = task.request if task.request.id == task_id else None
    return {
        "id": task_id, "task": task.name, "queue": queue, "priority": priority,
        "args": json.dumps(list(args or [])), "kwargs": json.dumps(dict(kwargs or {})),
        "exc_type": type(exc).__name__, "exc_message": str(exc), "traceback": getattr(einfo, "traceback", "") or "",
        "attempts": (request.retries or 0) + 1 if request else None, "worker": getattr(request, "hostname", None),
        "root_id": getattr(request, "root_id", None), "parent_id": getattr(request, "parent_id", None),
        "failed_at": time.time(),
    }  # fmt: skip


def from_unknown(name: str, task_id: str, message: Any) -> dict[str, Any]:
    """The dead letter of a message for a task no worker has."""
    args, kwargs, _embed = message.decode()
    info = message.delivery_info or {}
    return {
        "id": task_id, "task": name, "queue": info.get("routing_key") or "default", "priority": info.get("priority"),
        "args": json.dumps(args), "kwargs": json.dumps(kwargs), "exc_type": "NotRegistered",
        "exc_message": f"no worker has task {name!r}", "traceback": "", "failed_at": time.time(),
    }  # fmt: skip


def _queue_and_priority(task: Any, task_id: str) -> tuple[str, Any]:
    request = task.request
    if request.id == task_id and request.delivery_info:
        return request.delivery_info.get("routing_key") or "default", request.delivery_info.get("priority")
    try:  # a hard time limit is handled outside the task's request: ask the run history
        call = recorded_call(task.app, task_id)
        return call["queue"] or "default", call["priority"]
    except TaskkitError:
        return "default", None
