"""create_app(): the Celery app with taskkit's reliable defaults.

`celery -A taskkit.app worker` and `celery -A taskkit.app beat` work as usual: the module
builds its default app from taskkit.toml and TASKKIT_* on first use.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from celery import Celery

from . import capture, remote  # noqa: F401 - remote registers the workers' taskkit_status command
from .broker import celery_options
from .config import ConfigError, Settings, load_settings
from .errors import UnknownTask
from .keys import Keys
from .kinds import PRIORITIES
from .leases import Leases
from .topology import DEFAULT_QUEUE, Topology
from .transport import REPLICAS, REUSE, install

log = logging.getLogger(__name__)

BUILTIN_TASK_MODULES = ("taskkit.tasks.ops", "taskkit.tasks.science")
PUBLISH_RETRIES = 1  # one quick retry on a dropped connection, then a clear error


class TaskkitApp(Celery):
    """A Celery app that also carries taskkit's settings, topology and key names."""

    settings: Settings
    topology: Topology
    keys: Keys

    def task_named(self, name: str) -> Any:
        """The registered task `name`, after importing the configured task modules."""
        if not getattr(self, "_taskkit_imported", False):
            for module in self.conf.imports:
                try:
                    importlib.import_module(module)
                except ImportError as exc:
                    raise ConfigError("imports", module, f"an importable module ({exc})") from None
            self._taskkit_imported = True
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTask(name, user_tasks(self)) from None


def user_tasks(app: Celery) -> list[str]:
    return sorted(n for n in app.tasks if not n.startswith("celery."))


def celery_config(s: Settings) -> dict[str, Any]:
    """Celery settings from taskkit settings; `[celery]` in taskkit.toml has the last word."""
    timeout = s.broker.timeout
    conf: dict[str, Any] = {
        "broker_url": s.broker_url,
        "result_backend": s.result_url,
        # JSON only: a pickled message can run code on the worker.
        "accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        "result_accept_content": ["json"],
        # At-least-once: ack after the task ran; a lost worker puts its task back.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,  # a worker holds one message per free process
        "broker_transport_options": {
            # Longer than any time limit, retry delay or countdown (checked at load and on
            # submit), or Redis redelivers a message that is still being worked on.
            "visibility_timeout": s.broker.visibility_timeout,
            "queue_order_strategy": "priority",
            "priority_steps": list(PRIORITIES),
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
            "socket_keepalive": True,
            REUSE: True,  # one redis-py client per channel, not one per command (taskkit.transport)
        },
        "broker_connection_timeout": timeout,
        "broker_connection_retry_on_startup": True,  # a worker waits for Redis to come up
        "task_publish_retry_policy": {"max_retries": PUBLISH_RETRIES, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.5},
        "redis_socket_connect_timeout": timeout,
        "redis_socket_timeout": timeout,
        "result_backend_transport_options": {
            "retry_policy": {"max_retries": PUBLISH_RETRIES, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.5}
        },
        "redis_backend_health_check_interval": 30,
        "result_expires": s.broker.result_expires,
        # What monitors and the run history need to see.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "result_extended": True,
        # A message no task can run becomes a dead letter instead of crashing or vanishing (taskkit.capture.poison).
        "worker_consumer": "taskkit.capture.poison:Consumer",
        # Topology
        "task_queues": Topology(s).kombu_queues(),
        "task_default_queue": DEFAULT_QUEUE,
        "task_create_missing_queues": False,  # a typo in -Q or queue= fails instead of filling a dead list
        "task_time_limit": s.limits.time_limit,
        # Recycle pool processes (prefork): Celery counts tasks, and memory in KiB; None is no limit.
        "worker_max_tasks_per_child": s.limits.max_tasks_per_child or None,
        "worker_max_memory_per_child": (s.limits.max_memory_per_child // 1024) or None,
        "task_soft_time_limit": s.limits.soft_time_limit,
        "imports": (*BUILTIN_TASK_MODULES, *s.imports),
        # Schedules live in Redis (celery-redbeat): editable at run time, one active beat.
        # taskkit's RedBeatScheduler batches each tick and fences its writes with the lock.
        "beat_scheduler": "taskkit.beat:Scheduler",
        "beat_max_loop_interval": s.beat.max_interval,  # an edit takes effect within this
        "beat_schedule": {name: spec.beat_entry() for name, spec in s.schedules.items()},  # synced by the active beat
        "redbeat_key_prefix": Keys(s.key_prefix).redbeat_prefix(),
        "redbeat_lock_timeout": s.beat.lock_timeout,  # a standby takes over this long after the active beat dies
    }
    _merge(conf, celery_options(s))  # how the broker, the result backend and redbeat reach Redis: a sentinel list, TLS
    if s.broker.replicas_ack:  # taskkit.transport waits for the replicas after each publish
        conf["broker_transport_options"][REPLICAS] = (s.broker.replicas_ack, s.broker.replicas_timeout)
    if s.eager:
        conf.update(task_always_eager=True, task_eager_propagates=True, broker_url="memory://", result_backend="cache+memory://")
    _merge(conf, s.celery)
    return conf


def _merge(conf: dict[str, Any], more: Any) -> None:
    """Merge option tables, replace the rest."""
    for key, value in more.items():
        both_tables = isinstance(value, dict) and isinstance(conf.get(key), dict)
        conf[key] = {**conf[key], **value} if both_tables else value


_eager_said = False


def create_app(settings: Settings | None = None, *, main: str = "taskkit") -> TaskkitApp:
    """Build a taskkit Celery app from settings (default: taskkit.toml + TASKKIT_*)."""
    global _eager_said
    settings = settings or load_settings()
    capture.connect()  # history and dead-letter receivers, logging, beat's eviction check
    app = TaskkitApp(main, task_cls="taskkit.task:TaskkitTask")
    app.settings = settings
    app.topology = Topology(settings)
    app.conf.update(celery_config(settings))
    # after the conf: kombu's queue names depend on its transport options
    app.keys = Keys(settings.key_prefix, transport_options=app.conf.broker_transport_options)
    app.conf.task_routes = (app.topology.route,)
    app.steps["consumer"].add(Leases)  # a dead worker's messages go back within broker.lease
    install()  # taskkit's QoS and client reuse in kombu's Redis channels (taskkit.transport)
    if settings.eager and not _eager_said:
        _eager_said = True
        log.warning("taskkit: eager mode: tasks run in this process, without Redis or a worker")
    return app


_default: TaskkitApp | None = None


def get_app() -> TaskkitApp:
    """The process's default app, built on first use."""
    global _default
    if _default is None:
        _default = create_app()
    return _default


def __getattr__(name: str) -> Any:
    # `celery -A taskkit.app` looks up `app` (then `celery`) on this module.
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
