"""What waits in the queues, read from Redis: depth per priority level, unacked and
scheduled messages, peek, purge.

kombu keeps one Redis list per queue and priority level, LPUSHes new messages and BRPOPs
level 0 first, so within a level the oldest message is at the right end. A delivered
message stays in kombu's unacked hash until the worker acknowledges it (taskkit acks late,
so that is until the task ends; an ETA task sits there until its time comes). taskkit
reads these keys under the names keys.py spells and changes them only through kombu.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .app import TaskkitApp, get_app
from .broker import REDIS_ERRORS, Read, check_reachable, read, redis_client, unavailable
from .errors import UnknownQueue
from .kinds import COUNT, PRIORITIES, refuse

PEEK_COUNT = 10  # messages `peek` decodes when the caller names no count
SCAN_CHUNK = 1000  # messages per LRANGE when a whole queue is read (revoke by task name)


@dataclass(frozen=True)
class QueueInfo:
    """One queue, as Redis (and, for consumers, the workers) see it."""

    name: str
    priority: int | None  # default priority of the queue's messages; None for an undeclared queue
    waiting: int  # in Redis, every priority level counted
    levels: dict[int, int]  # waiting per priority level; empty levels left out
    unacked: int  # delivered to a worker, not yet acknowledged: running, prefetched or held for an ETA
    scheduled: int  # of the unacked, those held for an ETA/countdown still ahead
    consumers: tuple[str, ...] | None = None  # workers consuming it; None when they were not asked
    declared: bool = True  # False: messages in a queue taskkit.toml does not declare (a plain client's typo)


@dataclass(frozen=True)
class Message:
    """A task message, decoded without consuming it."""

    id: str
    task: str
    args: Any  # the JSON arguments, or Celery's argsrepr if the body can't be decoded
    kwargs: Any
    priority: int | None
    eta: str | None  # ISO 8601, as Celery sent it
    retries: int = 0
    queue: str = field(default="", compare=False)


def check_queue(queue: str, *, app: TaskkitApp, undeclared: bool = False) -> None:
    """UnknownQueue (with suggestions) unless `queue` is declared (or, with `undeclared`, holds messages)."""
    if queue not in app.topology.queues and not (undeclared and queue in undeclared_names(app=app)):
        raise UnknownQueue(queue, app.topology.queues)


def undeclared_names(*, app: TaskkitApp | None = None) -> list[str]:
    """Queues kombu has bindings for that taskkit.toml does not declare (one SCAN of the binding sets).

    A plain Celery client that sends to `queue="typo"` binds and fills such a queue; no
    taskkit worker consumes it. Control queues (pidbox, events, replies) are left out.
    """
    app = app or get_app()
    control = ("celery.pidbox", "celeryev", "reply.celery.pidbox")
    found: set[str] = set()
    with redis_client(app) as client:
        for key in client.scan_iter(match=app.keys.bindings_pattern(), count=1000):
            if key.decode().endswith(control):
                continue
            found.update(app.keys.bound_queue(m) for m in client.smembers(key))
    return sorted(found - set(app.topology.queues))


def depth(queue: str, *, app: TaskkitApp | None = None) -> int:
    """Waiting messages of one queue, declared or not, every priority level counted (one round trip)."""
    app = app or get_app()
    with redis_client(app) as client:
        pipe = client.pipeline(transaction=False)
        for key in app.keys.queue_levels(queue):
            pipe.llen(key)
        return sum(pipe.execute())


def undeclared_queues(*, app: TaskkitApp | None = None) -> list[QueueInfo]:
    """Undeclared queues with messages waiting, and how many per priority level (the orphans)."""
    app = app or get_app()
    names = undeclared_names(app=app)
    with redis_client(app) as client:
        pipe = client.pipeline(transaction=False)
        for name in names:
            for key in app.keys.queue_levels(name):
                pipe.llen(key)
        replies = pipe.execute()
    n = len(PRIORITIES)
    out = []
    for i, name in enumerate(names):
        levels = {p: c for p, c in zip(PRIORITIES, replies[i * n : (i + 1) * n], strict=True) if c}
        if levels:
            out.append(
                QueueInfo(name=name, priority=None, waiting=sum(levels.values()), levels=levels, unacked=0, scheduled=0, declared=False)
            )
    return out


def queue_depths(*, app: TaskkitApp | None = None) -> dict[str, int]:
    """Waiting messages per declared queue, every priority level counted, in one round trip."""
    app = app or get_app()
    return {q.name: q.waiting for q in read(app, counts_read(app, unacked=False))[0]}


def queue_counts(*, app: TaskkitApp | None = None) -> list[QueueInfo]:
    """Waiting (per level), unacked and scheduled messages of every declared queue, in one round trip."""
    app = app or get_app()
    return read(app, counts_read(app))[0]


def counts_read(app: TaskkitApp, *, unacked: bool = True) -> Read[list[QueueInfo]]:
    """LLEN of every level of every declared queue (and kombu's unacked hash), for one pipeline."""
    names = list(app.topology.queues)
    n = len(PRIORITIES)

    def enqueue(pipe: Any) -> None:
        for name in names:
            for key in app.keys.queue_levels(name):
                pipe.llen(key)
        if unacked:
            pipe.hvals(app.keys.unacked())

    def parse(replies: list[Any]) -> list[QueueInfo]:
        levels = {name: replies[i * n : (i + 1) * n] for i, name in enumerate(names)}
        held = dict.fromkeys(names, 0)
        ahead = dict.fromkeys(names, 0)
        now = datetime.now(UTC)
        for msg in _held(app, replies[-1]) if unacked else ():
            held[msg.queue] += 1
            ahead[msg.queue] += _is_future(msg.eta, now)
        return [
            QueueInfo(
                name=name,
                priority=app.topology.queues[name],
                waiting=sum(counts),
                levels={p: c for p, c in zip(PRIORITIES, counts, strict=True) if c},
                unacked=held[name],
                scheduled=ahead[name],
            )
            for name, counts in levels.items()
        ]

    return Read(enqueue, parse)


def _held(app: TaskkitApp, values: Sequence[bytes]) -> Iterator[Message]:
    """Unacked messages of declared queues; kombu stores [message, exchange, routing key]."""
    for value in values:
        try:
            payload, _exchange, routing_key = json.loads(value)
        except (ValueError, TypeError):
            continue
        if routing_key in app.topology.queues:  # taskkit binds each queue by its own name
            yield decode(payload, queue=routing_key)


def _is_future(eta: str | None, now: datetime) -> bool:
    if not eta:
        return False
    try:
        when = datetime.fromisoformat(eta)
    except ValueError:
        return False
    return (when if when.tzinfo else when.replace(tzinfo=UTC)) > now


def decode(payload: dict[str, Any] | bytes | str, *, queue: str = "") -> Message:
    """A kombu message (as stored in Redis) → Message. Celery protocol 2, JSON body."""
    if not isinstance(payload, dict):
        payload = json.loads(payload)
    headers = payload.get("headers") or {}
    props = payload.get("properties") or {}
    args, kwargs = _arguments(payload, headers)
    return Message(
        id=headers.get("id") or props.get("correlation_id") or "",
        task=headers.get("task") or "",
        args=args,
        kwargs=kwargs,
        priority=props.get("priority"),
        eta=headers.get("eta"),
        retries=headers.get("retries") or 0,
        queue=queue,
    )


def _arguments(payload: dict[str, Any], headers: dict[str, Any]) -> tuple[Any, Any]:
    body = payload.get("body", "")
    try:
        if (payload.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
        return args, kwargs
    except (ValueError, TypeError, binascii.Error):
        return headers.get("argsrepr"), headers.get("kwargsrepr")  # not taskkit's JSON: show what Celery shows


def peek(queue: str, *, count: int = PEEK_COUNT, undeclared: bool = False, app: TaskkitApp | None = None) -> list[Message]:
    """The first `count` waiting messages of `queue`, in the order workers will take them.

    Nothing is consumed. One MULTI/EXEC read of every priority level, so the levels agree.
    `undeclared=True` also reads a queue taskkit.toml does not declare (see undeclared_queues).
    """
    app = app or get_app()
    check_queue(queue, app=app, undeclared=undeclared)
    n = refuse("count", count, COUNT)
    if n == 0:
        return []
    with redis_client(app) as client:
        pipe = client.pipeline(transaction=True)
        for key in app.keys.queue_levels(queue):
            pipe.lrange(key, -n, -1)  # the n oldest of each level, newest first
        levels = pipe.execute()
    # level 0 first (kombu's BRPOP order), oldest first within a level
    return [decode(raw, queue=queue) for level in levels for raw in reversed(level)][:n]


def purge_queue(queue: str, *, undeclared: bool = False, app: TaskkitApp | None = None) -> int:
    """Delete every waiting message of `queue` (all priority levels); returns how many.

    Goes through kombu's queue_purge. Messages already delivered to workers (running,
    prefetched or held for an ETA) are not waiting and stay: revoke those. `undeclared=True`
    also purges a queue taskkit.toml does not declare.
    """
    app = app or get_app()
    check_queue(queue, app=app, undeclared=undeclared)
    check_reachable(app)  # one PING: kombu would retry a dead Redis for the whole connect timeout
    try:
        with app.connection_for_write() as conn:
            return int(conn.default_channel.queue_purge(queue))
    except REDIS_ERRORS as exc:
        raise unavailable(app, exc) from None


def find_ids(task_name: str, *, app: TaskkitApp) -> list[str]:
    """Ids of `task_name`'s messages waiting in any declared queue or held unacked by a worker.

    Reads each list from the left in chunks: new messages are LPUSHed, which can only make
    a chunk repeat a message (ids are deduplicated), and workers pop from the right, which
    moves nothing we have not read yet. Messages sent after the scan are not seen.
    """
    needle = task_name.encode() if task_name.isascii() else b""  # cheap filter before decoding (JSON may escape non-ASCII)
    ids: dict[str, None] = {}
    with redis_client(app) as client:
        keys = {key: 0 for name in app.topology.queues for key in app.keys.queue_levels(name)}
        while keys:
            pipe = client.pipeline(transaction=False)
            for key, start in keys.items():
                pipe.lrange(key, start, start + SCAN_CHUNK - 1)
            chunks = pipe.execute()
            for (key, start), chunk in zip(list(keys.items()), chunks, strict=True):
                ids.update((m.id, None) for raw in chunk if needle in raw and (m := decode(raw)).task == task_name)
                keys[key] = start + SCAN_CHUNK
                if len(chunk) < SCAN_CHUNK:
                    del keys[key]
        held = client.hvals(app.keys.unacked())
    ids.update((m.id, None) for m in _held(app, held) if m.task == task_name)
    return list(ids)
