"""The worker's consumer, hardened: a message Celery cannot turn into a task run becomes a dead
letter and the worker goes on consuming.

Celery 5.7 lets some malformed messages escape its consumer: a JSON body that is not
`[args, kwargs, embed]` raises in `worker/request.py` and the worker exits ("Unrecoverable
error"), the message goes back to the head of the queue and the next worker dies the same way.
Other bad messages (invalid JSON, an unknown content type, pickle, no task header) Celery
drops with a log line. Here each of them is kept as a dead letter (queue, the raw payload cut
at RAW_LIMIT, the reason) and acknowledged. Wired as `worker_consumer` by create_app.

The same consumer sends the task events it buffers (task-received, -started, ...) at most
EVENT_FLUSH_DELAY after the first of them, in one PUBLISH. Celery flushes with `call_soon`,
which runs before the pool is handed the job, so every task waited for that round trip
before it started (about 0.3–0.9 ms of the enqueue-to-start latency; `bench.latency`).
Flower and other monitors get the same events, at most that much later.

And it reconnects sooner after losing Redis: Celery retries every 2, 4, 6 … 30 s (kombu's
defaults, not a setting), so a worker that found no primary in its first round after a
Sentinel failover (about 1.5 s) idled 2–6 s more; RECONNECT retries within half a second.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from . import letters

log = logging.getLogger(__name__)

RAW_LIMIT = 65_536  # bytes of a poison message's body kept in its dead letter
EVENT_FLUSH_DELAY = 0.02  # seconds a buffered task event may wait: after the job is in the pool
RECONNECT = {"interval_start": 0.5, "interval_step": 0.5, "interval_max": 5.0}  # seconds between a lost worker's attempts


class Consumer(CeleryConsumer):
    """Celery's consumer with every unusable message dead-lettered instead of crashing or vanishing,
    and task events sent after the job reaches the pool."""

    _events_due: Any = None  # the timer of the pending flush

    def on_send_event_buffered(self) -> None:
        if self.hub and self._events_due is None:
            self._events_due = self.hub.call_later(EVENT_FLUSH_DELAY, self._send_events)

    def _send_events(self) -> None:
        self._events_due = None
        self._flush_events()

    def on_close(self) -> None:
        self._events_due = None  # a flush pending across a lost connection may not fire: the next event sets a new one
        self._flush_now()  # what cannot go out now waits in the dispatcher's outbound buffer, which a reconnect resends
        super().on_close()

    def _flush_now(self) -> None:
        try:
            self._flush_events()
        except Exception:  # the broker already gone: Celery would lose them too
            log.debug("taskkit: task events not flushed", exc_info=True)

    def shutdown(self) -> None:
        self._flush_now()  # what is still buffered, before Celery's Events step closes the dispatcher
        super().shutdown()

    def ensure_connected(self, conn: Any) -> Any:
        conn.ensure_connection = functools.partial(conn.ensure_connection, **RECONNECT)  # this connection only
        return super().ensure_connected(conn)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().create_task_handler(*args, **kwargs)
        connection_errors = tuple(self.connection_errors)

        limit = self.app.settings.limits.max_message_bytes

        def on_task_received(message: Any) -> Any:
            if limit and len(message.body or b"") > limit * 2:  # submits refuse over `limit`; this one came some other way
                self._poison(message, f"{len(message.body):,} bytes, over twice limits.max_message_bytes ({limit:,})")
                return message.ack()
            try:
                return handle(message)
            except connection_errors:
                raise  # the consumer's own recovery (reconnect) handles these
            except Exception as exc:  # a message that cannot become a request, e.g. a body of the wrong shape
                self._poison(message, f"unusable task message: {type(exc).__name__}: {exc}")
                message.ack()

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:  # invalid JSON, unknown content type or encoding
        self._poison(message, f"cannot decode the message: {type(exc).__name__}: {exc}")
        super().on_decode_error(message, exc)  # logs and acks

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:  # pickle and other refused content
        self._poison(message, f"refused message: {type(exc).__name__}: {exc}")
        super().on_invalid_task(body, message, exc)  # logs and rejects

    def on_unknown_message(self, body: Any, message: Any) -> None:  # no task header, not protocol 1 either
        self._poison(message, "not a task message (no task header)")
        super().on_unknown_message(body, message)

    def _poison(self, message: Any, reason: str) -> None:
        try:
            letters.store(self.app, from_poison(message, reason))
        except Exception:  # bookkeeping must never stop consuming; the log still has it
            log.exception("taskkit: could not store the dead letter of a poison message (%s)", reason)


def from_poison(message: Any, reason: str) -> dict[str, Any]:
    """The dead letter of a message no task can run: its queue, headers and raw body (cut), and why."""
    headers = message.headers if isinstance(getattr(message, "headers", None), dict) else {}
    info = getattr(message, "delivery_info", None) or {}
    body = message.body if isinstance(message.body, (bytes, str)) else repr(message.body)
    raw = body if isinstance(body, str) else body.decode("utf-8", "replace")
    return {
        "id": str(headers.get("id") or f"poison-{uuid.uuid4()}"),
        "task": str(headers.get("task") or "(none)"),
        "queue": info.get("routing_key") or "default",
        "priority": (getattr(message, "properties", None) or {}).get("priority"),
        "args": "[]",
        "kwargs": "{}",
        "exc_type": "PoisonMessage",
        "exc_message": reason,
        "traceback": "",
        "raw": raw[:RAW_LIMIT] + ("…[cut]" if len(raw) > RAW_LIMIT else ""),
        "content_type": getattr(message, "content_type", None) or "",
        "failed_at": time.time(),
    }
