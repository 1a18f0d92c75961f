"""Every Celery signal taskkit listens to, wired by one `connect()` (create_app calls it).

Receivers are connected strongly and with a dispatch_uid, so connecting twice (several
apps in one process, a re-imported module) never doubles an event. Each receiver finds
the app from its sender and does nothing for a plain Celery app.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from celery import current_app, signals
from celery.exceptions import Reject
from kombu.utils.json import dumps as kombu_dumps

from .. import logs
from ..broker import eviction_warning
from ..task import TaskkitTask, final_failure, publishing
from . import letters, rows, tallies
from .recorder import Recorder, recorder_for

SENT_HEADER = "taskkit_sent"  # when the message was published (UNIX seconds): a run's queue wait starts there
RECORDED_HEADER = "taskkit_recorded"  # the client recorded `sent` with the arguments: `received` need not repeat them

log = logging.getLogger(__name__)


def connect() -> None:
    """Connect every receiver below (idempotent)."""
    for signal, receiver in (
        # logging and beat
        (signals.after_setup_logger, _install_logging),
        (signals.after_setup_task_logger, _install_logging),
        (signals.beat_init, _warn_if_evicting),
        # run history: client side
        (signals.before_task_publish, _sending),
        (signals.after_task_publish, _sent),
        # run history: worker side
        (signals.task_received, _received),
        (signals.task_prerun, _started),
        (signals.task_success, _succeeded),
        (signals.task_retry, _retried),
        (signals.task_failure, _failed),
        (signals.task_revoked, _revoked),
        (signals.task_rejected, _rejected),
        (signals.worker_process_shutdown, _flush),
        (signals.worker_shutdown, _flush),
        # dead letters
        (signals.task_failure, _final_failure),
        (final_failure, _dead_letter),
        (signals.task_unknown, _unknown_task),
    ):
        signal.connect(receiver, weak=False, dispatch_uid=f"taskkit.{signal.name}.{receiver.__name__}")


def _ours(app: Any) -> bool:
    return getattr(app, "settings", None) is not None and getattr(app, "keys", None) is not None


def _task_recorder(task: Any) -> Recorder | None:
    return recorder_for(task.app) if task is not None else None


def _attempt(task: Any) -> int:
    return (task.request.retries or 0) + 1


# ------------------------------------------------------------ logging and beat


def _install_logging(logger: logging.Logger, **_: Any) -> None:
    settings = getattr(current_app, "settings", None)
    logs.install(logger, settings.log.format if settings else "text")


def _warn_if_evicting(sender: Any, **_: Any) -> None:
    # After beat has set up logging, before it waits for the lock: an allkeys-* policy can
    # silently drop schedules and the lock, so say it where operators look.
    app = getattr(sender, "app", None)
    if _ours(app) and (message := eviction_warning(app)):
        log.warning("taskkit: %s", message)


# ------------------------------------------------------------ run history


def _sending(body: Any = None, properties: dict | None = None, headers: dict | None = None, **_: Any) -> None:
    if (current := publishing.get()) is not None:
        # stamped before the message exists: a worker may receive it before after_task_publish
        current.update(priority=(properties or {}).get("priority"), ts=time.time())
        if headers is not None:
            headers[SENT_HEADER] = current["ts"]
            if recorder_for(current["app"]) is not None and _call_body(body):  # `sent` will hold the arguments
                headers[RECORDED_HEADER] = 1


def _sent(body: Any = None, headers: dict | None = None, routing_key: str = "", **_: Any) -> None:
    current = publishing.get()
    if current is None or not headers or "id" not in headers:
        return
    args, kwargs = (body[0], body[1]) if _call_body(body) else (None, None)
    record_sent(current["app"], headers, args, kwargs, routing_key, current.get("priority"), current.get("ts"))


def _call_body(body: Any) -> bool:
    """A message body of Celery's task protocol 2: (args, kwargs, embed)."""
    return isinstance(body, (list, tuple)) and len(body) >= 2


def record_sent(
    app: Any, headers: dict, args: Any, kwargs: Any, routing_key: str, priority: Any, ts: float | None, encoded: Any = None
) -> None:
    """The `sent` event of one published message (apply_async's, or one of submit_many's, with its JSON)."""
    rec = recorder_for(app)
    if rec is None:
        return
    rec.record(
        "sent", task=headers.get("task"), id=headers["id"], parent_id=headers.get("parent_id"), root_id=headers.get("root_id"),
        rerun_of=headers.get("rerun_of"), queue=routing_key, priority=priority,
        attempt=(headers.get("retries") or 0) + 1, eta=headers.get("eta"), args=args, kwargs=kwargs, index=True, ts=ts,
        encoded=encoded,
    )  # fmt: skip


def _received(sender: Any = None, request: Any = None, **_: Any) -> None:
    rec = _task_recorder(getattr(request, "task", None))
    if rec is None:
        return
    info = request.delivery_info or {}
    rd = request.request_dict
    # From a recording taskkit client, `sent` holds the arguments (and the rerun index): the
    # worker's main process spares encoding them again. From any other client, `received` does.
    ours = rd.get(RECORDED_HEADER)  # custom headers are part of the request
    args, kwargs = (None, None) if ours else (request.args, request.kwargs)
    rec.record(
        "received", task=request.name, id=request.id, parent_id=rd.get("parent_id"), root_id=rd.get("root_id"),
        rerun_of=rd.get("rerun_of"), queue=info.get("routing_key"), priority=info.get("priority"), worker=request.hostname,
        attempt=(rd.get("retries") or 0) + 1, eta=rd.get("eta"), args=args, kwargs=kwargs, index=not ours,
    )  # fmt: skip


def _queue(request: Any) -> str | None:
    return (getattr(request, "delivery_info", None) or {}).get("routing_key")


def _tally(app: Any, event: str, task: str | None, request: Any, **observed: float | None) -> Any:
    """What an event adds to the task tallies (capture.tallies), labels bounded."""
    return tallies.fields(event, *tallies.label(app, task, _queue(request)), **observed)


def _started(sender: Any = None, task_id: str = "", task: Any = None, **_: Any) -> None:
    if rec := _task_recorder(task):
        request, now = task.request, time.time()
        request.taskkit_started = now  # for the runtime of this attempt, in the same process
        sent = _header(request, SENT_HEADER)
        eta = _header(request, "eta")
        due = max(float(sent), datetime.fromisoformat(eta).timestamp() if eta else 0.0) if sent else None
        tally = _tally(task.app, "started", task.name, request, wait=None if due is None else now - due)
        rec.record("started", task=task.name, id=task_id, worker=request.hostname, attempt=_attempt(task), tally=tally)


def _runtime(request: Any) -> float | None:
    started = getattr(request, "taskkit_started", None)
    return None if started is None else time.time() - started


def _succeeded(sender: Any = None, result: Any = None, **_: Any) -> None:
    if rec := _task_recorder(sender):
        request = sender.request
        size = len(kombu_dumps(result)) if result is not None else 0
        rec.record(
            "succeeded", task=sender.name, id=request.id, worker=request.hostname, attempt=_attempt(sender), result_size=size,
            queue=_queue(request), tally=_tally(sender.app, "succeeded", sender.name, request, runtime=_runtime(request)),
        )  # fmt: skip


def _retried(sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None, **_: Any) -> None:
    if rec := _task_recorder(sender):
        exc = getattr(reason, "exc", None) or reason
        rec.record(
            "retried", task=sender.name, id=request.id, worker=request.hostname, attempt=(request.retries or 0) + 1,
            exc_type=type(exc).__name__, exc_message=rows.text(exc), traceback=rows.text(getattr(einfo, "traceback", "")),
            queue=_queue(request), tally=_tally(sender.app, "retried", sender.name, request, runtime=_runtime(sender.request)),
        )  # fmt: skip


def _failed(sender: Any = None, task_id: str = "", exception: BaseException | None = None, einfo: Any = None, **_: Any) -> None:
    if rec := _task_recorder(sender):
        event = "rejected" if isinstance(exception, Reject) else "failed"
        request = sender.request
        rec.record(
            event, task=sender.name, id=task_id, worker=request.hostname, attempt=_attempt(sender),
            exc_type=type(exception).__name__, exc_message=rows.text(exception), traceback=rows.text(getattr(einfo, "traceback", "")),
            queue=_queue(request), tally=_tally(sender.app, event, sender.name, request, runtime=_runtime(request)),
        )  # fmt: skip


def _revoked(sender: Any = None, request: Any = None, terminated: bool = False, expired: bool = False, **_: Any) -> None:
    if rec := _task_recorder(sender):
        why = "expired" if expired else "terminated" if terminated else ""
        # request is a Request, or a bare Context for a revoked ETA task: read it defensively
        rec.record(
            "revoked", task=sender.name, id=request.id, worker=getattr(request, "hostname", None), exc_message=rows.text(why),
            queue=_queue(request), tally=_tally(sender.app, "revoked", sender.name, request),
        )  # fmt: skip


def _rejected(sender: Any = None, message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    rec = recorder_for(app) if app is not None else None
    headers = getattr(message, "headers", None) or {}
    if rec is not None and "id" in headers:
        rec.record(
            "rejected", task=headers.get("task"), id=headers["id"], worker=getattr(sender, "hostname", None),
            exc_type=type(exc).__name__, exc_message=rows.text(exc), queue=_queue(message),
            tally=_tally(app, "rejected", headers.get("task"), message),
        )  # fmt: skip


def _header(request: Any, name: str) -> Any:
    """A message header as the task's request carries it (custom headers are attributes too)."""
    value = getattr(request, name, None)
    return value if value is not None else (getattr(request, "headers", None) or {}).get(name)


def _flush(**_: Any) -> None:
    rec = recorder_for(current_app._get_current_object())
    if rec is not None:
        rec.flush()


# ------------------------------------------------------------ dead letters


def _final_failure(sender: Any = None, task_id: str = "", exception: BaseException | None = None,
                   args: Any = None, kwargs: Any = None, einfo: Any = None, **_: Any) -> None:  # fmt: skip
    if isinstance(sender, TaskkitTask):
        final_failure.send(sender=sender, task_id=task_id, exc=exception, args=args, kwargs=kwargs, einfo=einfo)


def _dead_letter(sender: Any = None, task_id: str = "", exc: BaseException | None = None, args: Any = None,
                 kwargs: Any = None, einfo: Any = None, **_: Any) -> None:  # fmt: skip
    try:
        letters.store(sender.app, letters.from_failure(sender, task_id, exc, args, kwargs, einfo))
    except Exception:  # never let bookkeeping fail the worker; the run history still has it
        log.exception("taskkit: could not store dead letter for %s[%s]", sender.name, task_id)


def _unknown_task(sender: Any = None, name: str = "", id: str = "", message: Any = None, exc: Any = None, **_: Any) -> None:
    """A message for a task no worker has: keep it rather than let Celery drop it."""
    app = current_app._get_current_object()
    if not _ours(app):
        return
    try:
        letters.store(app, letters.from_unknown(name, id, message))
    except Exception:
        log.exception("taskkit: could not store dead letter for unknown task %s[%s]", name, id)
