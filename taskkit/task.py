"""The Task base class: checks before anything is queued, retries with backoff, progress.

Every task of a taskkit app gets this base (`task_cls`), so `@app.task`, `@shared_task`,
`.delay()`, `.apply_async()` and `taskkit.submit()` all behave the same way.
"""

from __future__ import annotations

import builtins
import inspect
import logging
import os
import random
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import wraps
from typing import Any, ClassVar

import redis
from celery import Task, states
from celery.backends.redis import RedisBackend
from celery.exceptions import Ignore, Reject, Retry
from celery.utils.dispatch import Signal
from celery.utils.imports import symbol_by_name
from kombu.exceptions import EncodeError
from kombu.utils.json import dumps as kombu_dumps

from .broker import REDIS_ERRORS, check_reachable, unavailable
from .errors import ConfigError, InvalidArguments, InvalidOption, UnknownQueue
from .kinds import PRIORITY, SECONDS, refuse
from .topology import Decision, RetryPolicy

# STARTED as Celery's Redis backend stores it (_store_result: never over a SUCCESS; _set: SETEX or
# SET, then PUBLISH), in one call. KEYS: the result key. ARGV: the encoded meta, expiry (0: none).
_STARTED = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end
end
if ARGV[2] ~= '0' then redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""

log = logging.getLogger(__name__)

PROGRESS = "PROGRESS"  # result state while a task reports progress
PROGRESS_MIN_INTERVAL = 0.2  # seconds between progress writes; the last one always goes out

#: Sent once when a task fails for good: retries exhausted, an error it does not retry,
#: a hard time limit, or a Reject without requeue. Receivers get sender=task, task_id, exc,
#: args, kwargs, einfo. Sent from Celery's task_failure (see taskkit.capture.receivers),
#: which covers exactly these cases (a retry is task_retry), in the pool process or, for
#: time limits, the worker's main process.
final_failure = Signal(name="taskkit.final_failure")

# What is being published right now in this context, {"app": app}: after_task_publish does
# not say which app sent a message (a process may hold several; a plain Celery app's sends
# are not ours), and only before_task_publish sees the message priority.
publishing: ContextVar[dict[str, Any] | None] = ContextVar("taskkit_publishing", default=None)


# Task-class attributes a task may declare, and the policy field each one sets.
DECLARABLE = {
    "queue": "queue",
    "priority": "priority",
    "retry_on": "on",
    "max_retries": "max_retries",
    "retry_backoff": "backoff",
    "retry_backoff_max": "backoff_max",
    "retry_jitter": "jitter",
}
_PASS_THROUGH = (Retry, Ignore, Reject)  # Celery's own control flow, never retried by us


def backoff_delay(policy: RetryPolicy, retries: int) -> float:
    """Seconds before retry number `retries` + 1: exponential, capped, with equal jitter.

    Equal jitter keeps each delay within [d/2, d], so delays still grow attempt by attempt.
    """
    delay = min(policy.backoff_max, policy.backoff * 2**retries)
    return random.uniform(delay / 2, delay) if policy.jitter else delay


def _exception_name(exc: str | type[BaseException]) -> str:
    if isinstance(exc, str):
        return exc
    return exc.__name__ if exc.__module__ == "builtins" else f"{exc.__module__}.{exc.__qualname__}"


def resolve_exceptions(names: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    out = []
    for name in names:
        try:
            exc = getattr(builtins, name) if "." not in name else symbol_by_name(name)
        except (AttributeError, ImportError, ValueError):
            exc = None
        if not (isinstance(exc, type) and issubclass(exc, BaseException)):
            raise ConfigError("retry.on", name, "an exception class (a builtin name or module.Class)")
        out.append(exc)
    return tuple(out)


class TaskkitTask(Task):
    typing = False  # arguments are checked here, once, with a clear error (check_call)
    # Celery stores STARTED before the task's try block, so a Redis blip at that moment ends
    # the run as failed without running it (and acks it). before_start stores it instead,
    # best effort, when task_track_started is on.
    track_started = False
    retry_on: tuple[str | type[BaseException], ...] | None = None  # None: route rule or [retry]
    taskkit_declared: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # `@app.task(max_retries=5)` puts options into the new class's own namespace:
        # remember which ones the task itself declared, so they beat route rules.
        declared = {field: cls.__dict__[attr] for attr, field in DECLARABLE.items() if attr in cls.__dict__}
        if declared.get("on") is not None:
            declared["on"] = tuple(map(_exception_name, declared["on"]))
        cls.taskkit_declared = {**cls.taskkit_declared, **declared}

    def __init__(self) -> None:
        super().__init__()
        run = self.run

        @wraps(run)
        def run_with_retry(*args: Any, **kwargs: Any) -> Any:
            try:
                return run(*args, **kwargs)
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                policy, retry_for = self._policy()
                if not isinstance(exc, retry_for) or self.request.called_directly:
                    raise
                raise self.retry(exc=exc, countdown=backoff_delay(policy, self.request.retries)) from None
            finally:
                self._started_stored()  # before Celery stores the outcome (or a retry)

        self.run = run_with_retry

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Store STARTED without making the task wait for it (best effort: only a status).

        With Celery's Redis backend, the write is one script call (Celery's own steps: never
        over a SUCCESS, then SETEX and PUBLISH) whose reply is read when the run stores
        anything else (progress, its outcome), so Redis applies them in order; the task body
        starts at once instead of after two round trips (about 0.6 ms; bench.latency).
        """
        if not self.app.conf.task_track_started or self.ignore_result or self.request.ignore_result:
            return
        backend, result = self.backend, {"pid": os.getpid(), "hostname": self.request.hostname}
        try:
            if not isinstance(backend, RedisBackend):
                backend.store_result(task_id, result, states.STARTED, request=self.request)
                return
            meta = backend._get_result_meta(result=result, state=states.STARTED, traceback=None, request=self.request)
            meta["task_id"] = task_id
            command = ("EVAL", _STARTED, 1, backend.get_key_for_task(task_id), backend.encode(meta), int(backend.expires or 0))
            pool = backend.client.connection_pool
            conn = pool.get_connection()
        except Exception:  # only a status: the task runs anyway, and its outcome is stored as usual
            log.debug("taskkit: STARTED not stored for %s", task_id, exc_info=True)
            return
        try:
            conn.send_command(*command)
        except Exception:
            conn.disconnect()
            pool.release(conn)
            return
        self.request.taskkit_started_write = (pool, conn)

    def _started_stored(self) -> None:
        """Read the reply of the STARTED write (before_start), if one is outstanding."""
        held = getattr(self.request, "taskkit_started_write", None)
        if held is None:
            return
        self.request.taskkit_started_write = None
        pool, conn = held
        try:
            conn.read_response()
        except redis.ResponseError as exc:  # refused (an ACL without EVAL, out of memory): the connection is fine
            log.debug("taskkit: STARTED not stored (%s)", exc)
        except Exception:  # a lost reply: STARTED is best effort; this connection is not reused
            conn.disconnect()
        finally:
            pool.release(conn)

    def update_state(self, *args: Any, **kwargs: Any) -> None:
        self._started_stored()  # PROGRESS lands after STARTED
        super().update_state(*args, **kwargs)

    # ------------------------------------------------------------ policy

    def decide(self, options: dict[str, Any] | None = None) -> Decision:
        """Queue, priority and retry policy of this task with these call options (topology.decide)."""
        return self.app.topology.decide(self.name, self.taskkit_declared, options)

    def _policy(self) -> tuple[RetryPolicy, tuple[type[BaseException], ...]]:
        cached = self.__dict__.get("_taskkit_policy")
        if cached is None:
            decision = self.decide()
            cached = decision.retry, resolve_exceptions(decision.retry.on)
            self._taskkit_policy = cached
            self.max_retries = decision.retry.max_retries  # what Celery's retry() enforces
        return cached

    # ------------------------------------------------------------ submitting

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any) -> Any:
        self.check_call(args, kwargs, options)
        self._policy()
        decision = self.decide(options)  # the message carries exactly what `routes explain` says
        options.setdefault("queue", decision.queue)  # a kombu Queue given by the caller stays as it is
        options["priority"] = decision.priority
        if not self.app.conf.task_always_eager:
            check_reachable(self.app)
        token = publishing.set({"app": self.app})  # tells the run-history recorder who sends
        try:
            return super().apply_async(args, kwargs, task_id, **options)
        except EncodeError as exc:
            raise InvalidArguments(self.name, f"not JSON-serialisable ({exc})") from None
        except (*REDIS_ERRORS, RuntimeError) as exc:
            # Celery's result backend gives up on Redis with a RuntimeError caused by the
            # connection error; anything else is a real bug and goes on up.
            cause = exc if isinstance(exc, REDIS_ERRORS) else exc.__cause__
            if not isinstance(cause, REDIS_ERRORS):
                raise
            raise unavailable(self.app, cause) from None
        finally:
            publishing.reset(token)

    def check_call(self, args: Any, kwargs: Any, options: dict[str, Any]) -> None:
        """Refuse a call that would fail or misbehave later; changes nothing."""
        if args is not None and not isinstance(args, (list, tuple)):
            raise InvalidArguments(self.name, f"args must be a list, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise InvalidArguments(self.name, f"kwargs must be an object, got {type(kwargs).__name__}")
        self.check_signature(args, kwargs)
        self._check_size(args, kwargs)
        queues = self.app.topology.queues
        queue = options.get("queue") or self.taskkit_declared.get("queue")  # the caller's, else the task's own
        if queue is not None and (queue_name := getattr(queue, "name", queue)) not in queues:
            raise UnknownQueue(queue_name, queues)
        if options.get("priority") is not None:
            refuse("priority", options["priority"], PRIORITY)
        self._check_delay(options)

    def check_signature(self, args: Any, kwargs: Any) -> None:
        """The call binds to the task's signature (inspected once per task)."""
        signature = self.__dict__.get("_taskkit_signature")
        if signature is None:  # computing it costs more than binding: once per task
            signature = self._taskkit_signature = inspect.signature(self.run)
        try:
            signature.bind(*(args or ()), **(kwargs or {}))
        except TypeError as exc:
            raise InvalidArguments(self.name, f"{exc} (signature: {self.name}{signature})") from None

    def _check_size(self, args: Any, kwargs: Any) -> None:
        if not self.app.settings.limits.max_message_bytes:
            return
        try:
            size = len(kombu_dumps([args or [], kwargs or {}]))  # as kombu will serialise them (dates, UUIDs, …)
        except (TypeError, ValueError) as exc:
            raise InvalidArguments(self.name, f"not JSON-serialisable ({exc})") from None
        self.check_size(size)

    def check_size(self, size: int) -> None:
        """A message over limits.max_message_bytes is refused: a few huge ones fill a noeviction Redis and stop every write."""
        limit = self.app.settings.limits.max_message_bytes
        if limit and size > limit:
            raise InvalidArguments(
                self.name, f"{size:,} bytes as JSON, over limits.max_message_bytes ({limit:,}); pass a reference (a path, a key) instead"
            )

    def _check_delay(self, options: dict[str, Any]) -> None:
        """A delay past the visibility timeout would make Redis hand the message out twice; expires must be a time."""
        expires = options.get("expires")
        if expires is not None and not isinstance(expires, datetime):
            refuse("expires", expires, SECONDS)  # seconds from now, or an aware datetime
        countdown, eta = options.get("countdown"), options.get("eta")
        if countdown is None and eta is None:
            return
        vt = self.app.settings.broker.visibility_timeout
        if eta is not None:
            if isinstance(eta, str):
                try:
                    eta = datetime.fromisoformat(eta)
                except ValueError:
                    raise InvalidOption("eta", eta, "an ISO time with its offset, such as 2030-10-01T09:00:00+02:00") from None
            if not isinstance(eta, datetime):
                raise InvalidOption("eta", eta, "a datetime (aware) or an ISO time with its offset")
            if eta.tzinfo is None:
                raise InvalidOption("eta", eta.isoformat(), "a naive time is ambiguous; give a time zone")
            name, delay = "eta", (eta - datetime.now(UTC)).total_seconds()
        else:
            name, delay = "countdown", refuse("countdown", countdown, SECONDS)
        if delay >= vt:
            raise InvalidOption(
                name,
                options[name],
                f"{delay:.0f}s ahead is beyond broker.visibility_timeout ({vt:g}s): Redis would "
                "deliver it twice. Use a schedule, or raise visibility_timeout",
            )

    # ------------------------------------------------------------ inside a run

    def progress(self, done: float, total: float | None = None, **meta: Any) -> None:
        """Report progress, readable as `AsyncResult(id).info` while the state is PROGRESS.

        Writes are throttled to one per PROGRESS_MIN_INTERVAL; the final one (done == total)
        always goes out.
        """
        request = self.request
        if request.called_directly or not request.id:
            return
        now = time.monotonic()
        if done != total and now - getattr(request, "taskkit_progress_at", 0.0) < PROGRESS_MIN_INTERVAL:
            return
        request.taskkit_progress_at = now
        percent = round(100.0 * done / total, 1) if total else None
        self.update_state(state=PROGRESS, meta={"done": done, "total": total, "percent": percent, **meta})
