"""taskkit: background jobs on Celery + Redis, driven from Python, the CLI and Jupyter."""

from .app import TaskkitApp, create_app, get_app
from .base import PROGRESS, TaskkitTask, final_failure
from .client import submit
from .config import Settings, load_settings
from .control import health, ping, queue_depths
from .errors import (
    BrokerUnavailable,
    ConfigError,
    DevStackError,
    InvalidArguments,
    InvalidOption,
    TaskkitError,
    UnknownQueue,
    UnknownTask,
)
from .results import cleanup_results, result

__all__ = [
    "PROGRESS",
    "BrokerUnavailable",
    "ConfigError",
    "DevStackError",
    "InvalidArguments",
    "InvalidOption",
    "Settings",
    "TaskkitApp",
    "TaskkitError",
    "TaskkitTask",
    "UnknownQueue",
    "UnknownTask",
    "cleanup_results",
    "create_app",
    "final_failure",
    "get_app",
    "health",
    "load_settings",
    "ping",
    "queue_depths",
    "result",
    "submit",
]
