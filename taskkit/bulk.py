"""Bulk submission: many calls, all checked first, published in pipelined batches.

`submit_many(name, calls)` checks every call as `submit` does (the signature bound per call,
inspected once) and publishes nothing if any is bad; the error names the call's index. The
first message is built by Celery and kombu themselves (`create_task_message`, the producer,
the channel's `basic_publish`, whose final LPUSH is caught instead of sent); every other
message is that one with its own id, arguments and delivery tag, exactly as Celery would
have built it (a contract test compares them field by field, and a plain `celery worker`
runs them). Messages go out in batches of BATCH, one pipelined round trip per batch, and
their `sent` history events with them.

`submit_chord(header, body)` is Celery's `chord(header)(body)` with the header published the
same way. It takes Celery's chord steps in `_chord.run`: the body frozen with the group id,
the backend's `apply_chord`, and the chord size the Redis backend counts the header's
results against (`set_chord_size`), stored before the first header message rather than just
before the last, so no point can end before it is there. The template of each header
message is built by Celery with the group id, a group index and the body embedded as the
chord, as `group._freeze_unroll` gives them; every point is a copy with its own id,
arguments and group index. A worker's `on_chord_part_return` then counts the points and
sends the body as for Celery's own chord (a contract test compares the messages).

Not sent for bulk messages: Celery's `task-sent` monitoring events (Flower shows the runs
from `task-received` on). submit_many does not subscribe to the result backend per task
(`wait()` polls); submit_chord's GroupResult does, as Celery's own does (about half of its
time: 6,500 points/s here against 730/s for Celery's chord, 31,000/s for submit_many).
Called inside a task, the messages do not carry that task as their parent (Celery's
`send_task` would set parent_id and root_id from it).
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery import Signature, chord
from celery.canvas import maybe_signature
from celery.result import AsyncResult, ResultSet
from celery.utils.saferepr import saferepr
from kombu.utils.json import dumps

from .app import TaskkitApp, get_app
from .broker import REDIS_ERRORS, check_reachable, redis_client, unavailable
from .capture.receivers import RECORDED_HEADER, SENT_HEADER, record_sent
from .capture.recorder import recorder_for
from .errors import InvalidArguments, InvalidOption, NotReplicated, WaitTimeout

BATCH = 1000  # messages per pipelined round trip
ENDED = ("SUCCESS", "FAILURE", "REVOKED")
HEADER_OPTIONS = ("queue", "priority", "countdown", "eta", "expires")  # what one chord header signature may set

Progress = Callable[[int, int], None]  # (done, total), as wait_sweep(on_progress=) calls it


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

    def wait(self, timeout: float | None = None, interval: float = 0.5, *, on_progress: Progress | None = None) -> dict[str, int]:
        """Block until every run has ended (SUCCESS, FAILURE or REVOKED); returns the counts.

        `on_progress(ended, total)` is called on the first poll and whenever more runs have ended.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last = -1
        while True:
            counts = self.counts()
            ended = sum(counts.get(s, 0) for s in ENDED)
            if on_progress is not None and ended != last:
                on_progress(ended, len(self.ids))
                last = ended
            if ended == len(self.ids):
                return counts
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"{len(self.ids) - ended} of {len(self.ids)} runs of {self.task}", timeout)
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
    on_batch: Progress | None = None,
    app: TaskkitApp | None = None,
) -> Submitted:
    """Queue one run of task `name` per call; nothing is queued if any call is refused.

    `calls`: args lists, (args, kwargs) pairs or kwargs dicts. Options apply to every run.
    `on_batch(published, total)` is called after each batch is in Redis (a progress bar's
    hook; what it raises stops the rest, and the batches already sent stay queued).
    Raises what `submit` raises, naming the call's index for a bad call.
    """
    app = app or get_app()
    task = app.task_named(name)
    given = (("queue", queue), ("priority", priority), ("countdown", countdown), ("eta", eta), ("expires", expires))
    options = {k: v for k, v in given if v is not None}
    pairs = [_normalise(i, call, name) for i, call in enumerate(calls)]
    if not pairs:
        return Submitted(app, name, [])
    # the options too, once, with the first call: they are the same for every call
    encoded = [_checked(task, f"call #{i}", args, kwargs, options if i == 0 else None) for i, (args, kwargs) in enumerate(pairs)]
    check_reachable(app)
    ids = _uuid4s(len(pairs))
    with _broker_errors(app), app.producer_or_acquire() as producer:
        template = _template(app, task, producer, _routed(task, options))
        items = [(template, i, args, kwargs, pair, None) for i, (args, kwargs), pair in zip(ids, pairs, encoded, strict=True)]
        _publish_all(app, items, batch, on_batch)
    return Submitted(app, name, ids)


def submit_chord(
    header: Iterable[Signature],
    body: Signature,
    *,
    batch: int = BATCH,
    on_batch: Progress | None = None,
    app: TaskkitApp | None = None,
) -> AsyncResult:
    """Celery's `chord(header)(body)`, with the header published in batches as submit_many does.

    `header`: signatures of single task calls (`app.signature(name, args, kwargs)`), each
    with any of the options queue, priority, countdown, eta, expires; `body`: the signature
    called with the list of their results in header order (unless it is immutable). Every
    call, the body's included, is checked first, and nothing is queued if one is refused.
    Returns the body's AsyncResult, whose `.parent` is the header's GroupResult, as Celery's
    chord does. In eager mode Celery's own chord runs it in this process. If Redis goes away
    between batches, the points already sent run but the body never fires (the chord size
    counts them all).
    """
    app = app or get_app()
    sigs = [_single(app, sig, f"header #{i}") for i, sig in enumerate(header)]
    body = _single(app, body, "body").clone()
    body_task = app.task_named(body.task)
    try:  # the worker that ends the header calls it with the results first
        body_task.check_call(list(body.args) if body.immutable else [[], *body.args], body.kwargs, body.options)
    except InvalidArguments as exc:
        raise InvalidArguments(body.task, f"chord body: {exc.reason}") from None
    calls, groups = [], {}  # one template per task and options
    for i, sig in enumerate(sigs):
        options = {k: v for k, v in sig.options.items() if v is not None}
        if extra := sorted(set(options) - set(HEADER_OPTIONS)):
            reason = f"header #{i}: a bulk chord header signature takes only {', '.join(HEADER_OPTIONS)}; use celery.chord"
            raise InvalidOption(extra[0], options[extra[0]], reason)
        task = app.task_named(sig.task)
        group = (sig.task, repr(sorted(options.items())))
        encoded = _checked(task, f"header #{i}", sig.args, sig.kwargs, options if group not in groups else None)
        groups.setdefault(group, (task, options))
        calls.append((group, sig, encoded))
    if app.conf.task_always_eager:
        return chord(sigs, app=app)(body)
    check_reachable(app)  # before the chord writes anything
    group_id = str(uuid.uuid4())
    result = body.freeze(group_id=group_id)  # chord.run: the body knows the header's group
    if not calls:
        body.delay([])  # chord.run: no header task would ever fire the body
        result.parent = app.GroupResult(group_id, [])
        return result
    ids = _uuid4s(len(calls))
    with _broker_errors(app), app.producer_or_acquire() as producer:
        parent = app.GroupResult(group_id, [app.AsyncResult(i) for i in ids])  # subscribes to each, as Celery's chord does
        app.backend.apply_chord((group_id, parent.results), body)
        app.backend.set_chord_size(group_id, len(calls))  # before any point can end and count itself
        templates = {
            group: _template(app, task, producer, _routed(task, options), group_id=group_id, group_index=0, chord=body)
            for group, (task, options) in groups.items()
        }
        items = [
            (templates[group], task_id, sig.args, sig.kwargs, encoded, index)
            for index, (task_id, (group, sig, encoded)) in enumerate(zip(ids, calls, strict=True))
        ]
        _publish_all(app, items, batch, on_batch)
    result.parent = parent
    return result


def _single(app: TaskkitApp, sig: Any, where: str) -> Signature:
    """A signature of one task call (not a group, chain or chord, which need Celery's own canvas)."""
    sig = maybe_signature(sig, app=app)  # a dict (a signature sent as JSON) becomes its canvas class
    if type(sig) is not Signature:
        raise InvalidOption(where, sig, "expected the signature of one task call, not a group, chain or chord; use celery.chord for those")
    return sig


def _checked(task: Any, where: str, args: Any, kwargs: Any, options: dict[str, Any] | None) -> tuple[str, str]:
    """Check one call as `submit` does (with `options`, the call options too); its args and kwargs as JSON."""
    try:
        if options is not None:
            task.check_call(args, kwargs, options)
        else:
            task.check_signature(args, kwargs)
        try:
            pair = dumps(args), dumps(kwargs)  # encoded once: the size check, the message body and the history
        except (TypeError, ValueError) as exc:
            raise InvalidArguments(task.name, f"not JSON-serialisable ({exc})") from None
        task.check_size(len(pair[0]) + len(pair[1]) + 4)  # len(dumps([args, kwargs]))
    except InvalidArguments as exc:
        raise InvalidArguments(task.name, f"{where}: {exc.reason}") from None
    return pair


def _routed(task: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The call options with the queue and priority `routes explain` gives (as TaskkitTask.apply_async sets them)."""
    decision = task.decide(options)
    return {**options, "queue": options.get("queue", decision.queue), "priority": decision.priority}


@contextmanager
def _broker_errors(app: TaskkitApp) -> Iterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:
        raise unavailable(app, exc) from None
    except RuntimeError as exc:  # Celery's result backend gives up with a RuntimeError caused by the connection error
        if not isinstance(exc.__cause__, REDIS_ERRORS):
            raise
        raise unavailable(app, exc.__cause__) from None


@dataclass(frozen=True)
class _Template:
    """One message as kombu would LPUSH it, the list it goes to, and its embed (callbacks, errbacks, chain, chord)."""

    key: str
    raw: dict[str, Any]
    embed: str

    def stamp(self, task_id: str, tag: str, args: Any, kwargs: Any, encoded: tuple[str, str], now: float, index: int | None) -> str:
        """A copy for one call: its id, arguments, delivery tag, send time and (in a chord's header) group index."""
        headers = dict(self.raw["headers"], id=task_id, root_id=task_id, argsrepr=_argsrepr(args), kwargsrepr=_argsrepr(kwargs))
        headers[SENT_HEADER] = now
        if index is not None:
            headers["group_index"] = index
        properties = dict(self.raw["properties"], correlation_id=task_id, delivery_tag=tag)
        body = base64.b64encode(f"[{encoded[0]}, {encoded[1]}, {self.embed}]".encode()).decode()  # = dumps((args, kwargs, embed))
        return dumps(dict(self.raw, headers=headers, properties=properties, body=body))


def _template(app: TaskkitApp, task: Any, producer: Any, options: dict[str, Any], **message: Any) -> _Template:
    """The message kombu would LPUSH for one call of `task` (args filled in later); `message`: group_id, group_index, chord."""
    channel = producer.channel
    caught: list[tuple[str, dict[str, Any]]] = []
    channel._put = lambda queue, message, **_: caught.append((queue, message))  # this channel only, for this call
    try:
        task_id = str(uuid.uuid4())
        built = app.amqp.create_task_message(
            task_id, task.name, (), {}, countdown=options.get("countdown"), eta=options.get("eta"), expires=options.get("expires"),
            time_limit=task.time_limit, soft_time_limit=task.soft_time_limit, ignore_result=task.ignore_result,
            reply_to=app.thread_oid, **message,
        )  # fmt: skip
        headers = dict(built.headers, **{SENT_HEADER: 0.0})
        if recorder_for(app) is not None:  # as receivers._sending stamps apply_async's messages
            headers[RECORDED_HEADER] = 1
        queue = app.amqp.queues[options["queue"]]
        app.amqp.send_task_message(
            producer, task.name, built._replace(headers=headers, sent_event=None), queue=queue, priority=options["priority"],
            routing_key=queue.routing_key, retry=False,
        )  # fmt: skip
    finally:
        del channel._put
    ((queue_name, raw),) = caught
    key = app.keys.kombu_prefix + channel._q_for_pri(queue_name, channel._get_message_priority(raw, reverse=False))
    embed = dumps(json.loads(base64.b64decode(raw["body"]))[2])  # Celery's callbacks/errbacks/chain/chord, as it wrote them
    return _Template(key, raw, embed)


def _argsrepr(value: Any) -> str:
    """Celery's saferepr(value, 1024), which equals repr() for a short list, tuple or dict of plain values."""
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


# one message to publish: its template, id, args, kwargs, their JSON, and its group index in a chord's header
_Item = tuple[_Template, str, Any, Any, tuple[str, str], int | None]


def _publish_all(app: TaskkitApp, items: list[_Item], batch: int, on_batch: Progress | None) -> None:
    for start in range(0, len(items), batch):
        _publish(app, items[start : start + batch])
        if on_batch is not None:
            on_batch(min(start + batch, len(items)), len(items))


def _publish(app: TaskkitApp, items: list[_Item]) -> None:
    """Build a batch's messages from their templates and LPUSH them in one round trip; record their `sent` events."""
    now = time.time()
    lists: dict[str, list[str]] = {}
    for tag, (template, task_id, args, kwargs, encoded, index) in zip(_uuid4s(len(items)), items, strict=True):
        lists.setdefault(template.key, []).append(template.stamp(task_id, tag, args, kwargs, encoded, now, index))
    replicas, timeout = app.settings.broker.replicas_ack, app.settings.broker.replicas_timeout
    with redis_client(app) as client:
        pipe = client.pipeline(transaction=False)  # one connection, so one WAIT covers the whole batch
        for key, blobs in lists.items():
            pipe.lpush(key, *blobs)  # one command per list, in call order (kombu pushes left, pops right)
        if replicas:
            pipe.execute_command("WAIT", replicas, int(timeout * 1000))
        replies = pipe.execute()
    for template, task_id, args, kwargs, encoded, _ in items:
        props = template.raw["properties"]
        headers = dict(template.raw["headers"], id=task_id, root_id=task_id)
        record_sent(app, headers, args, kwargs, props["delivery_info"]["routing_key"], props.get("priority"), now, encoded=encoded)
    if replicas and replies[-1] < replicas:  # queued and recorded, but not yet safe from losing the primary
        raise NotReplicated(f"a batch of {len(items)} tasks", replies[-1], replicas, timeout)
