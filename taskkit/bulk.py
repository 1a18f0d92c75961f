"""Bulk submission: many calls of one task, all checked first, published in pipelined batches.

`submit_many(name, calls)` checks every call as `submit` does (the signature bound per call,
inspected once) and publishes nothing if any is bad; the error names the call's index. The
first message is built by Celery and kombu themselves (`create_task_message`, the producer,
the channel's `basic_publish`, whose final LPUSH is caught instead of sent); every other
message is that one with its own id, arguments and delivery tag, exactly as Celery would
have built it (a contract test compares them field by field). Messages go out in batches of
BATCH, one pipelined round trip per batch, and their `sent` history events with them.

Not sent for bulk messages: Celery's `task-sent` monitoring events (Flower shows the runs
from `task-received` on); the result backend is not subscribed per task (`wait()` polls).
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery.result import AsyncResult, ResultSet
from celery.utils.saferepr import saferepr
from kombu.utils.json import dumps

from .app import TaskkitApp, get_app
from .broker import REDIS_ERRORS, check_reachable, redis_client, unavailable
from .capture.receivers import SENT_HEADER, record_sent
from .errors import InvalidArguments, WaitTimeout

BATCH = 1000  # messages per pipelined round trip
ENDED = ("SUCCESS", "FAILURE", "REVOKED")


@dataclass
class Submitted:
    """What submit_many queued: the ids, in call order, and ways to follow them."""

    app: TaskkitApp = field(repr=False)
    task: str
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def results(self) -> ResultSet:
        """A Celery ResultSet of the runs (what `taskkit.widgets.progress()` follows)."""
        return ResultSet([AsyncResult(i, app=self.app) for i in self.ids], app=self.app)

    def counts(self) -> dict[str, int]:
        """Runs per state, from the result backend (one pipelined read)."""
        keys = [self.app.backend.get_key_for_task(i) for i in self.ids]
        out: dict[str, int] = {}
        with redis_client(self.app) as client:
            metas = client.mget(keys) if keys else []
        for raw in metas:
            state = self.app.backend.decode_result(raw)["status"] if raw else "PENDING"
            out[state] = out.get(state, 0) + 1
        return out

    def wait(self, timeout: float | None = None, interval: float = 0.5) -> dict[str, int]:
        """Block until every run has ended (SUCCESS, FAILURE or REVOKED); returns the counts."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            counts = self.counts()
            if sum(counts.get(s, 0) for s in ENDED) == len(self.ids):
                return counts
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"{len(self.ids) - sum(counts.get(s, 0) for s in ENDED)} of {len(self.ids)} runs of {self.task}", timeout)
            time.sleep(interval)


def _normalise(i: int, call: Any, task: str) -> tuple[list[Any], dict[str, Any]]:
    if isinstance(call, dict):
        return [], call
    if isinstance(call, tuple) and len(call) == 2 and isinstance(call[0], (list, tuple)) and isinstance(call[1], dict):
        return list(call[0]), call[1]
    if isinstance(call, (list, tuple)):
        return list(call), {}
    raise InvalidArguments(task, f"call #{i}: expected an args list, an (args, kwargs) pair or a kwargs dict, got {type(call).__name__}")


def submit_many(
    name: str,
    calls: Iterable[Any],
    *,
    queue: str | None = None,
    priority: int | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    expires: float | datetime | None = None,
    batch: int = BATCH,
    app: TaskkitApp | None = None,
) -> Submitted:
    """Queue one run of task `name` per call; nothing is queued if any call is refused.

    `calls`: args lists, (args, kwargs) pairs or kwargs dicts. Options apply to every run.
    Raises what `submit` raises, naming the call's index for a bad call.
    """
    app = app or get_app()
    task = app.task_named(name)
    given = (("queue", queue), ("priority", priority), ("countdown", countdown), ("eta", eta), ("expires", expires))
    options = {k: v for k, v in given if v is not None}
    pairs = [_normalise(i, call, name) for i, call in enumerate(calls)]
    if not pairs:
        return Submitted(app, name, [])
    encoded = []
    for i, (args, kwargs) in enumerate(pairs):
        try:
            if i == 0:
                task.check_call(args, kwargs, options)  # the options too, once: they are the same for every call
            else:
                task.check_signature(args, kwargs)
            try:
                pair = dumps(args), dumps(kwargs)  # encoded once: the size check, the message body and the history
            except (TypeError, ValueError) as exc:
                raise InvalidArguments(name, f"not JSON-serialisable ({exc})") from None
            task.check_size(len(pair[0]) + len(pair[1]) + 4)  # len(dumps([args, kwargs]))
        except InvalidArguments as exc:
            raise InvalidArguments(name, f"call #{i}: {exc.reason}") from None
        encoded.append(pair)
    check_reachable(app)
    decision = task.decide(options)
    options.setdefault("queue", decision.queue)
    options["priority"] = decision.priority
    ids: list[str] = []
    try:
        with app.producer_or_acquire() as producer:
            key, template = _template(app, task, producer, options)
            for start in range(0, len(pairs), batch):
                ids += _publish(app, task, key, template, pairs[start : start + batch], encoded[start : start + batch])
    except REDIS_ERRORS as exc:
        raise unavailable(app, exc) from None
    return Submitted(app, name, ids)


def _template(app: TaskkitApp, task: Any, producer: Any, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The list key and the message kombu would LPUSH for one call of `task` (args filled in later)."""
    channel = producer.channel
    caught: list[tuple[str, dict[str, Any]]] = []
    channel._put = lambda queue, message, **_: caught.append((queue, message))  # this channel only, for this call
    try:
        task_id = str(uuid.uuid4())
        message = app.amqp.create_task_message(
            task_id, task.name, (), {}, countdown=options.get("countdown"), eta=options.get("eta"), expires=options.get("expires"),
            time_limit=task.time_limit, soft_time_limit=task.soft_time_limit, ignore_result=task.ignore_result,
            reply_to=app.thread_oid,
        )  # fmt: skip
        headers = dict(message.headers, **{SENT_HEADER: 0.0})
        queue = app.amqp.queues[options["queue"]]
        app.amqp.send_task_message(
            producer, task.name, message._replace(headers=headers, sent_event=None), queue=queue, priority=options["priority"],
            routing_key=queue.routing_key, retry=False,
        )  # fmt: skip
    finally:
        del channel._put
    ((queue_name, raw),) = caught
    key = app.keys.kombu_prefix + channel._q_for_pri(queue_name, channel._get_message_priority(raw, reverse=False))
    return key, raw


def _argsrepr(value: Any) -> str:
    """Celery's saferepr(value, 1024), which equals repr() for a short list or dict of plain values."""
    if all(isinstance(v, _PLAIN) for v in (value.values() if isinstance(value, dict) else value)):
        text = repr(value)
        if len(text) <= 512:
            return text
    return saferepr(value, 1024)


_PLAIN = (str, int, float, bool, type(None))


def _uuid4s(n: int) -> list[str]:
    """n random (version 4) UUIDs as strings, from one urandom call: uuid.uuid4() costs more than the message."""
    raw = bytearray(os.urandom(16 * n))
    out = []
    for i in range(0, 16 * n, 16):
        raw[i + 6] = raw[i + 6] & 0x0F | 0x40  # version 4
        raw[i + 8] = raw[i + 8] & 0x3F | 0x80  # RFC 4122 variant
        h = raw[i : i + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def _publish(app: TaskkitApp, task: Any, key: str, template: dict[str, Any], chunk: list[Any], encoded: list[tuple[str, str]]) -> list[str]:
    """Build the chunk's messages from the template and LPUSH them in one round trip; record their `sent` events."""
    props_t, headers_t = template["properties"], template["headers"]
    embed = dumps(json.loads(base64.b64decode(template["body"]))[2])  # Celery's callbacks/errbacks/chain/chord, as it wrote them
    now = time.time()
    uuids = _uuid4s(2 * len(chunk))
    ids, blobs = uuids[::2], []
    for task_id, tag, (args, kwargs), (args_json, kwargs_json) in zip(ids, uuids[1::2], chunk, encoded, strict=True):
        headers = dict(headers_t, id=task_id, root_id=task_id, argsrepr=_argsrepr(args), kwargsrepr=_argsrepr(kwargs))
        headers[SENT_HEADER] = now
        properties = dict(props_t, correlation_id=task_id, delivery_tag=tag)
        body = base64.b64encode(f"[{args_json}, {kwargs_json}, {embed}]".encode()).decode()  # = dumps((args, kwargs, embed))
        blobs.append(dumps(dict(template, headers=headers, properties=properties, body=body)))
    with redis_client(app) as client:
        client.lpush(key, *blobs)  # one command for the batch, in call order (kombu pushes left, pops right)
    routing_key, priority = props_t["delivery_info"]["routing_key"], props_t.get("priority")
    for task_id, (args, kwargs), pair in zip(ids, chunk, encoded, strict=True):
        record_sent(app, dict(headers_t, id=task_id, root_id=task_id), args, kwargs, routing_key, priority, now, encoded=pair)
    return ids
