"""Workers and queues, seen from outside: queues with their consumers, and the
worker remote-control commands (inspect, revoke, rate limits, pool size, pause/resume).

Every worker call goes through Celery's Control/Inspect broadcast with a timeout and
returns {"replies": {worker: reply}, "missing": [worker], "errors": {worker: message}}:
`missing` names the requested destinations that did not answer within the timeout, and
`errors` the workers that answered with an error. A call addressed to named workers
returns as soon as they have all answered; one addressed to every worker waits for the
whole timeout, since nobody knows how many workers there are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from celery.app.control import flatten_reply
from celery.platforms import signals
from celery.utils.time import rate

from . import queues, remote
from .app import TaskkitApp, get_app
from .broker import REDIS_ERRORS, Read, check_reachable, unavailable
from .errors import InvalidOption
from .kinds import POSITIVE, TIMEOUT, refuse
from .queues import QueueInfo

PING_TIMEOUT = 1.0  # seconds to wait for workers' replies to a ping
CONTROL_TIMEOUT = 1.0  # seconds to wait for workers' replies to any other command
REPLY_POLL = 0.1  # seconds per BRPOP for replies, so a call ends (and its connection closes) near its timeout
INSPECT_COMMANDS = ("ping", "stats", "active", "reserved", "scheduled", "registered", "active_queues", "revoked")

Destination = str | Sequence[str] | None


def ping(*, timeout: float = PING_TIMEOUT, app: TaskkitApp | None = None) -> dict[str, bool]:
    """Worker hostname → answered. Workers that do not answer within `timeout` are absent."""
    replies = inspect("ping", timeout=timeout, app=app)["replies"]
    return {host: isinstance(reply, dict) and reply.get("ok") == "pong" for host, reply in replies.items()}


# ---------------------------------------------------------------- the broadcast


def _destination(destination: Destination) -> list[str] | None:
    names = [destination] if isinstance(destination, str) else list(destination or ())
    names = [n.strip() for name in names for n in name.split(",") if n.strip()]
    return names or None


def _call(app: TaskkitApp, call: Callable[..., Any], destination: Destination, timeout: float) -> dict[str, Any]:
    """Run one Celery broadcast and sort the answers into replies, missing and errors."""
    timeout = refuse("timeout", timeout, TIMEOUT)
    names = _destination(destination)
    check_reachable(app)  # a dead Redis is an error within broker.timeout, not a retry loop
    try:
        # A connection of its own, closed after: on a pooled one, a broadcast to all workers
        # leaves a BRPOP for replies in flight that swallows the next call's replies.
        with app.connection_for_write(transport_options={"polling_interval": REPLY_POLL}) as conn:
            raw = call(destination=names, timeout=timeout, connection=conn)
    except REDIS_ERRORS as exc:
        raise unavailable(app, exc) from None
    # Inspect already merges the per-worker answers; Control returns [{worker: reply}, ...]
    replies = dict(raw or {}) if isinstance(raw, dict) else flatten_reply(raw or [])
    errors = {w: str(r["error"]) for w, r in replies.items() if isinstance(r, dict) and "error" in r}
    return {"replies": replies, "missing": sorted(set(names or ()) - set(replies)), "errors": errors}


def _control(app: TaskkitApp, method: str, *args: Any, destination: Destination, timeout: float, **kwargs: Any) -> dict[str, Any]:
    command = getattr(app.control, method)
    return _call(app, lambda **to: command(*args, reply=True, **to, **kwargs), destination, timeout)


def inspect(
    what: str, *, destination: Destination = None, timeout: float = CONTROL_TIMEOUT, app: TaskkitApp | None = None
) -> dict[str, Any]:
    """Ask workers (all, or `destination`) for one of INSPECT_COMMANDS: stats, active tasks, ….

    `registered` lists task names with their rate limits; `active_queues` the queues each
    worker consumes; `scheduled` the ETA/countdown tasks a worker holds.
    """
    app = app or get_app()
    if what not in INSPECT_COMMANDS:
        raise InvalidOption("what", what, f"one of {', '.join(INSPECT_COMMANDS)}")
    return _call(app, lambda **to: getattr(app.control.inspect(**to), what)(), destination, timeout)


def workers(*, destination: Destination = None, timeout: float = CONTROL_TIMEOUT, app: TaskkitApp | None = None) -> dict[str, Any]:
    """One row per worker: pool size, prefetch, active/reserved/scheduled tasks, queues, processed, uptime, pid.

    One broadcast (the workers' `taskkit_status` command, taskkit.remote), so a call to every
    worker costs one timeout, and a call to named workers returns when they have answered.
    """
    app = app or get_app()
    return _call(app, lambda **to: app.control.broadcast(remote.COMMAND, reply=True, **to), destination, timeout)


def known_workers_read(app: TaskkitApp) -> Read[list[str]]:
    """The workers that have a remote-control queue in Redis (live ones, and any killed before removing it)."""
    key = app.keys.pidbox_bindings()
    return Read(lambda pipe: pipe.smembers(key), lambda replies: sorted(app.keys.worker_of_binding(m) for m in replies[0]))


def queue_info(
    *, consumers: bool = True, undeclared: bool = True, timeout: float = CONTROL_TIMEOUT, app: TaskkitApp | None = None
) -> list[QueueInfo]:
    """Every declared queue: waiting per priority level, unacked, scheduled, and its consumers;
    then, as `declared=False` rows, undeclared queues that hold messages (undeclared=False skips them).

    The declared queues' counts are one pipelined round trip; finding undeclared ones is one
    SCAN of kombu's binding sets. Consumers come from the workers' active_queues (one
    broadcast that waits `timeout`); consumers=False skips it.
    """
    app = app or get_app()
    counts = queues.queue_counts(app=app)
    if undeclared:  # one SCAN of kombu's binding sets: queues with messages no declared queue owns
        counts += queues.undeclared_queues(app=app)
    if not consumers:
        return counts
    by_queue: dict[str, list[str]] = {}
    for worker, active in inspect("active_queues", timeout=timeout, app=app)["replies"].items():
        for q in active or ():
            by_queue.setdefault(q["name"], []).append(worker)
    return [replace(info, consumers=tuple(sorted(by_queue.get(info.name, ())))) for info in counts]


# ---------------------------------------------------------------- commands


def revoke(
    ids: str | Sequence[str] = (),
    *,
    task_name: str | None = None,
    terminate: bool = False,
    signal: str = "TERM",
    destination: Destination = None,
    timeout: float = CONTROL_TIMEOUT,
    app: TaskkitApp | None = None,
) -> dict[str, Any]:
    """Revoke tasks by id, or every message of `task_name` waiting or held by a worker now.

    Workers drop a revoked task when it reaches them; `terminate` also kills the pool
    process running it (with `signal`). Workers remember revoked ids in memory, so only
    workers that answer (and workers that start later and sync with them) honour it.
    Returns the broadcast result plus "ids", the ids revoked.
    """
    app = app or get_app()
    sig = "SIG" + str(signal).upper().removeprefix("SIG")
    try:
        signals.signum(sig)
    except (AttributeError, TypeError):
        raise InvalidOption("signal", signal, "a signal name such as TERM or KILL") from None
    found = [ids] if isinstance(ids, str) else list(ids)
    if task_name is not None:
        app.task_named(task_name)  # UnknownTask, with suggestions, for a typo
        found += queues.find_ids(task_name, app=app)
        if terminate:  # a task that does not ack late is in no Redis key while it runs
            running = inspect("active", destination=destination, timeout=timeout, app=app)["replies"]
            found += [t["id"] for tasks in running.values() for t in tasks or () if t.get("name") == task_name]
    elif not found:
        raise InvalidOption("ids", ids, "give task ids or a task name")
    found = list(dict.fromkeys(found))
    if not found:
        return {"ids": [], "replies": {}, "missing": [], "errors": {}}
    result = _control(app, "revoke", found, terminate=terminate, signal=sig, destination=destination, timeout=timeout)
    return {"ids": found, **result}


def rate_limit(
    task_name: str,
    limit: str | float | None,
    *,
    destination: Destination = None,
    timeout: float = CONTROL_TIMEOUT,
    app: TaskkitApp | None = None,
) -> dict[str, Any]:
    """Set a task's rate limit on the workers ("10/s", "100/m", "5/h", tasks per second as a
    number; None, 0 or "none" removes it). Each worker enforces it for its own process pool."""
    app = app or get_app()
    app.task_named(task_name)
    if str(limit).strip().lower() in ("none", "0", ""):
        limit = None
    try:
        rate(limit)
    except (ValueError, KeyError, TypeError):
        raise InvalidOption("rate_limit", limit, 'expected a rate such as "10/s", "100/m" or "5/h", or 0 for none') from None
    value = str(limit) if limit else None
    return _control(app, "rate_limit", task_name, value, destination=destination, timeout=timeout)


def pool_grow(
    n: int = 1, *, destination: Destination = None, timeout: float = CONTROL_TIMEOUT, app: TaskkitApp | None = None
) -> dict[str, Any]:
    """Add `n` processes to the workers' pools (refused by autoscaling workers)."""
    return _control(app or get_app(), "pool_grow", refuse("n", n, POSITIVE), destination=destination, timeout=timeout)


def pool_shrink(
    n: int = 1, *, destination: Destination = None, timeout: float = CONTROL_TIMEOUT, app: TaskkitApp | None = None
) -> dict[str, Any]:
    """Remove `n` processes from the workers' pools (refused by autoscaling workers)."""
    return _control(app or get_app(), "pool_shrink", refuse("n", n, POSITIVE), destination=destination, timeout=timeout)


def autoscale(
    maximum: int, minimum: int = 0, *, destination: Destination = None, timeout: float = CONTROL_TIMEOUT, app: TaskkitApp | None = None
) -> dict[str, Any]:
    """Set the autoscale range of workers started with --autoscale; others answer an error."""
    refuse("maximum", maximum, POSITIVE)
    if not isinstance(minimum, int) or isinstance(minimum, bool) or not 0 <= minimum <= maximum:
        raise InvalidOption("minimum", minimum, f"expected a whole number from 0 to maximum ({maximum})")
    return _control(app or get_app(), "autoscale", maximum, minimum, destination=destination, timeout=timeout)


def pause(
    queue: str, *, destination: Destination = None, timeout: float = CONTROL_TIMEOUT, app: TaskkitApp | None = None
) -> dict[str, Any]:
    """Stop workers (all, or `destination`) taking messages from `queue`; running tasks finish.

    Messages keep waiting in Redis. The worker cancels its consumer just after it answers.
    """
    app = app or get_app()
    queues.check_queue(queue, app=app)
    return _control(app, "cancel_consumer", queue, destination=destination, timeout=timeout)


def resume(
    queue: str, *, destination: Destination = None, timeout: float = CONTROL_TIMEOUT, app: TaskkitApp | None = None
) -> dict[str, Any]:
    """Make workers (all, or `destination`) consume `queue` again, as declared in taskkit.toml.

    A worker that never consumed the queue starts to.
    """
    app = app or get_app()
    queues.check_queue(queue, app=app)
    return _control(app, "add_consumer", queue, destination=destination, timeout=timeout)
