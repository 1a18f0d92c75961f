"""Worker log lines that name the task they are about, as text or JSON."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery._state import get_current_task

TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(task)s%(message)s"


class TaskContext(logging.Filter):
    """Adds task_name and task_id to every record logged while a task runs.

    Celery's own task logger does this only for get_task_logger(); this filter covers any
    logger a task's code (or a library it calls) uses.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task_id"):
            task = get_current_task()
            request = task.request if task else None
            record.task_name = task.name if request and request.id else ""
            record.task_id = request.id if request and request.id else ""
        # Celery's own lines ("Task x[id] succeeded") already name the task: don't repeat it
        named = not record.task_id or record.task_id in record.getMessage()
        record.task = "" if named else f"{record.task_name}[{record.task_id}]: "
        return True


class JsonFormatter(logging.Formatter):
    converter = time.gmtime  # timestamps in UTC, marked Z

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        if getattr(record, "task_id", ""):
            out["task_name"], out["task_id"] = record.task_name, record.task_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def install(logger: logging.Logger, fmt: str) -> None:
    """Give every handler of `logger` the task context and taskkit's format."""
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    for handler in logger.handlers:
        handler.addFilter(TaskContext())
        handler.setFormatter(formatter)
