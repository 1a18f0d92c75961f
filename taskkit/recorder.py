"""Run history, write side: Celery signals → one Redis Stream, batched off the task's path.

Every process that publishes or runs tasks (a client, the worker's main process, each
pool child) records lifecycle events into an in-memory buffer; a daemon thread writes the
buffer with one script call per batch (at most one round trip per event, usually far
fewer). A Redis hiccup is logged and counted, never raised into a task. Events still
buffered when a process is SIGKILLed (milliseconds' worth) are lost; everything else is
flushed at exit and at worker shutdown.

Each stream entry is one field `v`: the event's columns joined by SEP in FIELDS order,
text that may hold newlines JSON-encoded. The reader turns pages of these rows into
DataFrame columns with pandas' C parser instead of building a dict per event.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections import deque
from contextvars import ContextVar
from typing import Any

from celery import current_app, signals
from celery.exceptions import Reject
from kombu.utils.json import dumps as kombu_dumps

from .broker import redis_client

log = logging.getLogger(__name__)

VERSION = "1"  # first column of every row; bump when FIELDS change
SEP = "\x1f"  # ASCII unit separator: JSON escapes it, names never contain it
FIELDS = (
    "version", "event", "ts", "task", "id", "parent_id", "root_id", "rerun_of", "queue", "priority",
    "worker", "attempt", "args", "kwargs", "cut", "exc_type", "exc_message", "traceback", "result_size", "eta",
)  # fmt: skip
EVENTS = ("sent", "received", "started", "retried", "succeeded", "failed", "revoked", "rejected")
CUT_MARK = "…[cut]"  # ends a value cut at history.max_value_bytes

FLUSH_INTERVAL = 0.05  # seconds between writes while events keep coming
BATCH = 2000  # events per script call
BUFFER_CAP = 100_000  # events kept while Redis is unreachable; older ones are dropped and counted
TRIM_EVERY = 50  # batches between age trims (MINID)
WARN_EVERY = 30.0  # seconds between warnings while Redis stays unreachable

# XADD every row (MAXLEN ~ caps the length), remember where each run's arguments are
# (for rerun), and now and then drop events older than max_age (MINID ~).
_WRITE = """
for i = 5, #ARGV, 2 do
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'v', ARGV[i])
  if ARGV[i + 1] ~= '' then
    redis.call('SET', ARGV[4] .. ARGV[i + 1], id, 'NX', 'EX', ARGV[3])
  end
end
if ARGV[2] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[2]) end
return #ARGV
"""


def cut(value: Any, limit: int) -> tuple[str, bool]:
    """JSON of value, cut to `limit` bytes with an explicit marker."""
    text = kombu_dumps(value)
    if len(text) <= limit:
        return text, False
    return text[: max(limit - len(CUT_MARK), 0)] + CUT_MARK, True


def _text(value: Any) -> str:
    return json.dumps(str(value)) if value not in (None, "") else ""


class Recorder:
    """Buffers events of one app in this process and writes them in batches."""

    def __init__(self, app: Any) -> None:
        self.app = app
        h = app.settings.history
        self.max_value_bytes, self.max_events, self.max_age = h.max_value_bytes, h.max_events, h.max_age
        self.stream = app.keys.runs()
        self.index_prefix = app.keys.run_index("")
        self.buffer: deque[tuple[str, str]] = deque()
        self.wake = threading.Event()
        self.lock = threading.Lock()  # one flush at a time (the thread, exit, shutdown)
        self.pid = 0
        self.errors = 0  # failed writes
        self.dropped = 0  # events given up while Redis was unreachable
        self.batches = 0
        self.warned_at = -WARN_EVERY
        self._script: Any = None

    # ------------------------------------------------------------ recording

    def record(
        self, event: str, *, args: Any = None, kwargs: Any = None, index: bool = False, ts: float | None = None, **fields: Any
    ) -> None:
        if args is not None or kwargs is not None:
            fields["args"], args_cut = cut(args or [], self.max_value_bytes)
            fields["kwargs"], kwargs_cut = cut(kwargs or {}, self.max_value_bytes)
            fields["cut"] = ",".join(n for n, c in (("args", args_cut), ("kwargs", kwargs_cut)) if c)
        fields.update(version=VERSION, event=event, ts=repr(time.time() if ts is None else ts))
        row = SEP.join("" if (v := fields.get(f)) is None else str(v) for f in FIELDS)
        self._start()
        self.buffer.append((row, fields["id"] if index else ""))
        if len(self.buffer) >= BATCH:
            self.wake.set()

    def _start(self) -> None:
        if self.pid != os.getpid():  # first event in this process, or a fresh fork
            self.pid = os.getpid()
            # A fork inherits the parent's buffer (the parent writes it) and maybe a held lock.
            self.buffer.clear()
            self.lock, self.wake = threading.Lock(), threading.Event()
            threading.Thread(target=self._run, name="taskkit-recorder", daemon=True).start()

    def _run(self) -> None:
        while True:
            self.wake.wait(FLUSH_INTERVAL)
            self.wake.clear()
            if self.buffer:
                self.flush()

    def flush(self) -> None:
        """Write everything buffered; on failure keep it for the next try (bounded)."""
        with self.lock:
            while self.buffer:
                batch = [self.buffer.popleft() for _ in range(min(BATCH, len(self.buffer)))]
                try:
                    self._write(batch)
                except Exception as exc:  # never raise into a task: count, log, keep for later
                    self.errors += 1
                    self.buffer.extendleft(reversed(batch))
                    while len(self.buffer) > BUFFER_CAP:
                        self.buffer.pop()
                        self.dropped += 1
                    if time.monotonic() - self.warned_at > WARN_EVERY:
                        self.warned_at = time.monotonic()
                        log.warning("taskkit: run history not written (%s); %d events buffered", exc, len(self.buffer))
                    return

    def _write(self, batch: list[tuple[str, str]]) -> None:
        self.batches += 1
        minid = ""
        if self.batches % TRIM_EVERY == 1:
            minid = str(int((time.time() - self.max_age) * 1000))
        argv: list[Any] = [self.max_events, minid, max(int(self.max_age), 1), self.index_prefix]
        for row, index_id in batch:
            argv += (row, index_id)
        with redis_client(self.app) as client:
            if self._script is None:
                self._script = client.register_script(_WRITE)
            self._script(keys=[self.stream], args=argv, client=client)


# ------------------------------------------------------------ which app records


def recorder_for(app: Any) -> Recorder | None:
    """The app's recorder, or None for a non-taskkit app or history.enabled = false."""
    rec = app.__dict__.get("_taskkit_recorder", False)
    if rec is False:
        settings = getattr(app, "settings", None)
        rec = Recorder(app) if settings is not None and settings.history.enabled and not settings.eager else None
        app._taskkit_recorder = rec
        if rec is not None:
            atexit.register(rec.flush)
    return rec


# What is being published right now in this context, {"app": app}: after_task_publish does
# not say which app sent a message (a process may hold several; a plain Celery app's sends
# are not ours), and only before_task_publish sees the message priority.
publishing: ContextVar[dict[str, Any] | None] = ContextVar("taskkit_publishing", default=None)


def _task_recorder(task: Any) -> Recorder | None:
    return recorder_for(task.app) if task is not None else None


# ------------------------------------------------------------ signals


@signals.before_task_publish.connect(weak=False)
def _sending(properties: dict | None = None, **_: Any) -> None:
    if (current := publishing.get()) is not None:
        # stamped before the message exists: a worker may receive it before after_task_publish
        current.update(priority=(properties or {}).get("priority"), ts=time.time())


@signals.after_task_publish.connect(weak=False)
def _sent(body: Any = None, headers: dict | None = None, routing_key: str = "", **_: Any) -> None:
    current = publishing.get()
    rec = recorder_for(current["app"]) if current is not None else None
    if rec is None or not headers or "id" not in headers:
        return
    args, kwargs = (body[0], body[1]) if isinstance(body, (list, tuple)) and len(body) >= 2 else (None, None)
    rec.record(
        "sent", task=headers.get("task"), id=headers["id"], parent_id=headers.get("parent_id"), root_id=headers.get("root_id"),
        rerun_of=headers.get("rerun_of"), queue=routing_key, priority=current.get("priority"),
        attempt=(headers.get("retries") or 0) + 1, eta=headers.get("eta"), args=args, kwargs=kwargs, index=True,
        ts=current.get("ts"),
    )  # fmt: skip


@signals.task_received.connect(weak=False)
def _received(sender: Any = None, request: Any = None, **_: Any) -> None:
    rec = _task_recorder(getattr(request, "task", None))
    if rec is None:
        return
    info = request.delivery_info or {}
    rd = request.request_dict
    rec.record(
        "received", task=request.name, id=request.id, parent_id=rd.get("parent_id"), root_id=rd.get("root_id"),
        rerun_of=rd.get("rerun_of"), queue=info.get("routing_key"), priority=info.get("priority"), worker=request.hostname,
        attempt=(rd.get("retries") or 0) + 1, eta=rd.get("eta"), args=request.args, kwargs=request.kwargs, index=True,
    )  # fmt: skip


def _attempt(task: Any) -> int:
    return (task.request.retries or 0) + 1


@signals.task_prerun.connect(weak=False)
def _started(sender: Any = None, task_id: str = "", task: Any = None, **_: Any) -> None:
    if rec := _task_recorder(task):
        rec.record("started", task=task.name, id=task_id, worker=task.request.hostname, attempt=_attempt(task))


@signals.task_success.connect(weak=False)
def _succeeded(sender: Any = None, result: Any = None, **_: Any) -> None:
    if rec := _task_recorder(sender):
        size = len(kombu_dumps(result)) if result is not None else 0
        rec.record(
            "succeeded", task=sender.name, id=sender.request.id, worker=sender.request.hostname, attempt=_attempt(sender), result_size=size
        )


@signals.task_retry.connect(weak=False)
def _retried(sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None, **_: Any) -> None:
    if rec := _task_recorder(sender):
        exc = getattr(reason, "exc", None) or reason
        rec.record(
            "retried", task=sender.name, id=request.id, worker=request.hostname, attempt=(request.retries or 0) + 1,
            exc_type=type(exc).__name__, exc_message=_text(exc), traceback=_text(getattr(einfo, "traceback", "")),
        )  # fmt: skip


@signals.task_failure.connect(weak=False)
def _failed(sender: Any = None, task_id: str = "", exception: BaseException | None = None, einfo: Any = None, **_: Any) -> None:
    if rec := _task_recorder(sender):
        event = "rejected" if isinstance(exception, Reject) else "failed"
        rec.record(
            event, task=sender.name, id=task_id, worker=sender.request.hostname, attempt=_attempt(sender),
            exc_type=type(exception).__name__, exc_message=_text(exception), traceback=_text(getattr(einfo, "traceback", "")),
        )  # fmt: skip


@signals.task_revoked.connect(weak=False)
def _revoked(sender: Any = None, request: Any = None, terminated: bool = False, expired: bool = False, **_: Any) -> None:
    if rec := _task_recorder(sender):
        why = "expired" if expired else "terminated" if terminated else ""
        # request is a Request, or a bare Context for a revoked ETA task: read it defensively
        rec.record("revoked", task=sender.name, id=request.id, worker=getattr(request, "hostname", None), exc_message=_text(why))


@signals.task_rejected.connect(weak=False)
def _rejected(sender: Any = None, message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    rec = recorder_for(app) if app is not None else None
    headers = getattr(message, "headers", None) or {}
    if rec is not None and "id" in headers:
        rec.record(
            "rejected",
            task=headers.get("task"),
            id=headers["id"],
            worker=getattr(sender, "hostname", None),
            exc_type=type(exc).__name__,
            exc_message=_text(exc),
        )


@signals.worker_process_shutdown.connect(weak=False)
@signals.worker_shutdown.connect(weak=False)
def _flush_on_shutdown(**_: Any) -> None:
    rec = recorder_for(current_app._get_current_object())
    if rec is not None:
        rec.flush()
