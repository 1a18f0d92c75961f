"""Dead letters: tasks that failed for good, kept per queue with everything needed to replay.

A dead letter is one Redis hash (the message, the error, the replay state) indexed per
queue by failure time. Replay is claim → publish → confirm:

- claim sets a replay id atomically (a script), so two replays never both publish;
- publish sends the original message again under that replay id;
- confirm marks the dead letter replayed; replaying it again then needs force=True.

If a process dies between claim and confirm the dead letter stays, claimed: after the claim
lease a later replay resumes it with the same replay id, and skips publishing when the run
history shows that id was already sent. Nothing is lost; a duplicate needs a crash inside
the recorder's few-millisecond buffer window (tasks are idempotent anyway).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from celery import current_app, signals

from .app import TaskkitApp, get_app
from .base import final_failure
from .broker import redis_client
from .errors import AlreadyReplayed, ReplayInProgress, TaskkitError, UnknownDeadLetter
from .runs import Since, epoch
from .runs import recorded_call as _recorded_call

log = logging.getLogger(__name__)

CLAIM_LEASE = 60.0  # seconds a claim is honoured before another replay may resume it
LIST_LIMIT = 1000  # dead letters returned by entries() unless asked for more

# Atomically claim a dead letter for replay. Returns "claimed", "resume", "replayed" or
# "busy", and the replay id in force.
_CLAIM = """
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then return {'missing', ''} end
local replay_id = redis.call('HGET', h, 'replay_id')
local replayed = redis.call('HGET', h, 'replayed_at')
local force, now, lease = ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
if not force and replayed then return {'replayed', replay_id} end
if not force and replay_id then
  local claimed = tonumber(redis.call('HGET', h, 'claimed_at') or '0')
  if now - claimed < lease then return {'busy', replay_id} end
  redis.call('HSET', h, 'claimed_at', ARGV[3])
  return {'resume', replay_id}
end
redis.call('HSET', h, 'replay_id', ARGV[1], 'claimed_at', ARGV[3])
redis.call('HDEL', h, 'replayed_at')
return {'claimed', ARGV[1]}
"""


# ------------------------------------------------------------ capture


def store(app: TaskkitApp, entry: dict[str, Any]) -> None:
    """Write one dead letter and its indexes in one round trip."""
    keys = app.keys
    with redis_client(app) as client:
        pipe = client.pipeline(transaction=True)
        pipe.hset(keys.deadletter(entry["id"]), mapping={k: v for k, v in entry.items() if v is not None})
        pipe.zadd(keys.deadletter_queue(entry["queue"]), {entry["id"]: entry["failed_at"]})
        pipe.sadd(keys.deadletter_queues(), entry["queue"])
        pipe.execute()


def _queue_and_priority(task: Any, task_id: str) -> tuple[str, Any]:
    request = task.request
    if request.id == task_id and request.delivery_info:
        return request.delivery_info.get("routing_key") or "default", request.delivery_info.get("priority")
    try:  # a hard time limit is handled outside the task's request: ask the run history
        call = _recorded_call(task.app, task_id)
        return call["queue"] or "default", call["priority"]
    except TaskkitError:
        return "default", None


@final_failure.connect(weak=False)
def _dead_letter(sender: Any = None, task_id: str = "", exc: BaseException | None = None, args: Any = None,
                 kwargs: Any = None, einfo: Any = None, **_: Any) -> None:  # fmt: skip
    try:
        queue, priority = _queue_and_priority(sender, task_id)
        request = sender.request if sender.request.id == task_id else None
        store(sender.app, {
            "id": task_id, "task": sender.name, "queue": queue, "priority": priority,
            "args": json.dumps(list(args or [])), "kwargs": json.dumps(dict(kwargs or {})),
            "exc_type": type(exc).__name__, "exc_message": str(exc), "traceback": getattr(einfo, "traceback", "") or "",
            "attempts": (request.retries or 0) + 1 if request else None, "worker": getattr(request, "hostname", None),
            "root_id": getattr(request, "root_id", None), "parent_id": getattr(request, "parent_id", None),
            "failed_at": time.time(),
        })  # fmt: skip
    except Exception:  # never let bookkeeping fail the worker; the run history still has it
        log.exception("taskkit: could not store dead letter for %s[%s]", sender.name, task_id)


@signals.task_unknown.connect(weak=False)
def _unknown_task(sender: Any = None, name: str = "", id: str = "", message: Any = None, exc: Any = None, **_: Any) -> None:
    """A message for a task no worker has: keep it rather than let Celery drop it."""
    app = current_app._get_current_object()
    if not isinstance(app, TaskkitApp):
        return
    try:
        args, kwargs, _embed = message.decode()
        info = message.delivery_info or {}
        store(app, {
            "id": id, "task": name, "queue": info.get("routing_key") or "default", "priority": info.get("priority"),
            "args": json.dumps(args), "kwargs": json.dumps(kwargs), "exc_type": "NotRegistered",
            "exc_message": f"no worker has task {name!r}", "traceback": "", "failed_at": time.time(),
        })  # fmt: skip
    except Exception:
        log.exception("taskkit: could not store dead letter for unknown task %s[%s]", name, id)


# ------------------------------------------------------------ reading


def _decode(raw: dict[bytes, bytes]) -> dict[str, Any]:
    entry: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    for key in ("args", "kwargs"):
        entry[key] = json.loads(entry[key])
    for key in ("failed_at", "claimed_at", "replayed_at"):
        if key in entry:
            entry[key] = float(entry[key])
    for key in ("priority", "attempts"):
        if key in entry:
            entry[key] = int(entry[key])
    entry["replayed"] = "replayed_at" in entry
    return entry


def get(task_id: str, *, app: TaskkitApp | None = None) -> dict[str, Any]:
    """One dead letter: message, exception, traceback, attempts, replay state."""
    app = app or get_app()
    with redis_client(app) as client:
        raw = client.hgetall(app.keys.deadletter(task_id))
    if not raw:
        raise UnknownDeadLetter(task_id)
    return _decode(raw)


def entries(
    *,
    app: TaskkitApp | None = None,
    queue: str | None = None,
    task: str | None = None,
    exc_type: str | None = None,
    since: Since = None,
    until: Since = None,
    limit: int = LIST_LIMIT,
) -> list[dict[str, Any]]:
    """Dead letters, newest first, filtered by queue, task, exception type and failure time."""
    app = app or get_app()
    now = time.time()
    low, high = epoch(since, now=now), epoch(until, now=now)
    low, high = "-inf" if low is None else low, "+inf" if high is None else high
    keys = app.keys
    with redis_client(app) as client:
        queues = [queue] if queue else sorted(q.decode() for q in client.smembers(keys.deadletter_queues()))
        pipe = client.pipeline(transaction=False)
        for q in queues:
            pipe.zrevrangebyscore(keys.deadletter_queue(q), high, low)
        ids = [i.decode() for found in pipe.execute() for i in found]
        pipe = client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(keys.deadletter(task_id))
        found = [_decode(raw) for raw in pipe.execute() if raw]
    found = [e for e in found if (task is None or e["task"] == task) and (exc_type is None or e["exc_type"] == exc_type)]
    found.sort(key=lambda e: e["failed_at"], reverse=True)
    return found[:limit]


# ------------------------------------------------------------ replay, drop, purge


def replay(
    task_ids: list[str] | str,
    *,
    app: TaskkitApp | None = None,
    queue: str | None = None,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    force: bool = False,
    lease: float = CLAIM_LEASE,
) -> list[dict[str, Any]]:
    """Send dead letters again (to their queue or `queue`, optionally with new args/kwargs).

    Everything is checked before anything is sent: unknown ids, already replayed ones
    (unless force), and the arguments. Returns one {"id", "replay_id", "queue", "status"}
    per dead letter.
    """
    from .client import submit

    app = app or get_app()
    ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
    letters = [get(i, app=app) for i in ids]
    done = {e["id"]: e["replay_id"] for e in letters if e["replayed"]}
    if done and not force:
        raise AlreadyReplayed(done)
    calls = []
    for e in letters:
        call_args, call_kwargs = (e["args"] if args is None else args), (e["kwargs"] if kwargs is None else kwargs)
        target = queue or e["queue"]
        options = {"queue": target, "priority": e.get("priority")}
        app.task_named(e["task"]).check_call(call_args, call_kwargs, options)  # before any claim
        calls.append((e, call_args, call_kwargs, target))
    out = []
    for e, call_args, call_kwargs, target in calls:
        status, replay_id = claim(e["id"], app=app, force=force, lease=lease)
        if status == "resume" and _was_sent(app, replay_id):
            status = "confirmed"  # it went out before a crash; only the mark was missing
        else:
            submit(e["task"], args=call_args, kwargs=call_kwargs, queue=target, priority=e.get("priority"),
                   task_id=replay_id, headers={"replay_of": e["id"]}, app=app)  # fmt: skip
        with redis_client(app) as client:
            client.hset(app.keys.deadletter(e["id"]), mapping={"replayed_at": time.time(), "replay_queue": target})
        out.append({"id": e["id"], "replay_id": replay_id, "queue": target, "status": status})
    return out


def claim(task_id: str, *, app: TaskkitApp | None = None, force: bool = False, lease: float = CLAIM_LEASE) -> tuple[str, str]:
    """Reserve a dead letter for replay: ("claimed" | "resume", replay_id). First step of replay()."""
    app = app or get_app()
    with redis_client(app) as client:
        status, replay_id = client.eval(_CLAIM, 1, app.keys.deadletter(task_id), str(uuid.uuid4()), int(force), time.time(), lease)
    status, replay_id = status.decode(), replay_id.decode()
    if status == "missing":
        raise UnknownDeadLetter(task_id)
    if status == "replayed":
        raise AlreadyReplayed({task_id: replay_id})
    if status == "busy":
        raise ReplayInProgress(task_id)
    return status, replay_id


def _was_sent(app: TaskkitApp, task_id: str) -> bool:
    with redis_client(app) as client:
        return bool(client.exists(app.keys.run_index(task_id)))


def drop(task_ids: list[str] | str, *, app: TaskkitApp | None = None) -> int:
    """Delete dead letters; returns how many existed."""
    app = app or get_app()
    ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
    letters = []
    for task_id in ids:
        try:
            letters.append(get(task_id, app=app))
        except UnknownDeadLetter:
            pass
    with redis_client(app) as client:
        pipe = client.pipeline(transaction=True)
        for e in letters:
            pipe.delete(app.keys.deadletter(e["id"]))
            pipe.zrem(app.keys.deadletter_queue(e["queue"]), e["id"])
        pipe.execute()
    return len(letters)


def purge(*, app: TaskkitApp | None = None, queue: str | None = None) -> int:
    """Delete every dead letter (of one queue); returns the count removed."""
    app = app or get_app()
    keys = app.keys
    with redis_client(app) as client:
        queues = [queue] if queue else [q.decode() for q in client.smembers(keys.deadletter_queues())]
        removed = 0
        for q in queues:
            ids = client.zrange(keys.deadletter_queue(q), 0, -1)
            pipe = client.pipeline(transaction=True)
            for task_id in ids:
                pipe.delete(keys.deadletter(task_id.decode()))
            pipe.delete(keys.deadletter_queue(q))
            pipe.srem(keys.deadletter_queues(), q)
            pipe.execute()
            removed += len(ids)
    return removed
