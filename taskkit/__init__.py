"""taskkit: background jobs on Celery + Redis, driven from Python, the CLI and Jupyter.

Every public function takes its subject first and options by keyword, and `app=None`
means the default app (taskkit.toml + TASKKIT_*). The run-history reader (`events`,
`runs`) and `reports` need pandas and load it on first use, so workers never do.
"""

import importlib

from . import alerts, deadletters
from .app import TaskkitApp, create_app, get_app
from .bulk import Submitted, submit_chord, submit_many
from .client import rerun, submit
from .config import Settings, load_settings
from .control import autoscale, inspect, pause, ping, pool_grow, pool_shrink, queue_info, rate_limit, resume, revoke, workers
from .errors import (
    AlreadyReplayed,
    BrokerUnavailable,
    ConfigError,
    Conflict,
    DevStackError,
    InvalidArguments,
    InvalidInput,
    InvalidOption,
    NoReply,
    NotFound,
    NotReplicated,
    ReplayInProgress,
    RunbookFailed,
    ScheduleError,
    TaskkitError,
    Unavailable,
    UnknownDeadLetter,
    UnknownQueue,
    UnknownRun,
    UnknownRunbook,
    UnknownSchedule,
    UnknownTask,
    WaitTimeout,
)
from .queues import Message, QueueInfo, peek, purge_queue, queue_depths
from .results import Progress, cleanup_results, progress_of, result, wait
from .routing import explain_route, routes
from .schedules import (
    Schedule,
    Upcoming,
    add_schedule,
    delete_schedule,
    disable_schedule,
    enable_schedule,
    get_schedule,
    list_schedules,
    next_runs,
    run_schedule_now,
    upcoming,
    update_schedule,
)
from .status import Snapshot, health, recorder_stats, redis_info, snapshot
from .task import PROGRESS, TaskkitTask, final_failure
from .topology import Decision, RetryPolicy

# name -> (module, attribute or None for the module itself): the pandas-backed read side
_LAZY = {"events": ("history", "events"), "runs": ("history", "runs"), "reports": ("reports", None)}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    loaded = importlib.import_module(f".{module}", __name__)  # pandas loads here, on first use
    return loaded if attribute is None else getattr(loaded, attribute)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "PROGRESS",
    "AlreadyReplayed",
    "BrokerUnavailable",
    "ConfigError",
    "Conflict",
    "Decision",
    "DevStackError",
    "InvalidArguments",
    "InvalidInput",
    "InvalidOption",
    "Message",
    "NoReply",
    "NotFound",
    "NotReplicated",
    "Progress",
    "QueueInfo",
    "ReplayInProgress",
    "RetryPolicy",
    "RunbookFailed",
    "Schedule",
    "ScheduleError",
    "Settings",
    "Snapshot",
    "Submitted",
    "TaskkitApp",
    "TaskkitError",
    "TaskkitTask",
    "Unavailable",
    "UnknownDeadLetter",
    "UnknownQueue",
    "UnknownRun",
    "UnknownRunbook",
    "UnknownSchedule",
    "UnknownTask",
    "Upcoming",
    "WaitTimeout",
    "add_schedule",
    "alerts",
    "autoscale",
    "cleanup_results",
    "create_app",
    "deadletters",
    "delete_schedule",
    "disable_schedule",
    "enable_schedule",
    "events",
    "explain_route",
    "final_failure",
    "get_app",
    "get_schedule",
    "health",
    "inspect",
    "list_schedules",
    "load_settings",
    "next_runs",
    "pause",
    "peek",
    "ping",
    "pool_grow",
    "pool_shrink",
    "progress_of",
    "purge_queue",
    "queue_depths",
    "queue_info",
    "rate_limit",
    "recorder_stats",
    "redis_info",
    "reports",
    "rerun",
    "result",
    "resume",
    "revoke",
    "routes",
    "run_schedule_now",
    "runs",
    "snapshot",
    "submit",
    "submit_chord",
    "submit_many",
    "upcoming",
    "update_schedule",
    "wait",
    "workers",
]
