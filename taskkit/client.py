"""Submitting tasks by name and waiting for them: the calls the CLI and notebooks share."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery.result import AsyncResult

from .app import TaskkitApp, get_app


def submit(
    name: str,
    *,
    args: list[Any] | tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    headers: dict[str, Any] | None = None,
    task_id: str | None = None,
    app: TaskkitApp | None = None,
) -> AsyncResult:
    """Queue task `name`. Everything is checked first; on any error nothing is queued.

    Raises UnknownTask, InvalidArguments, UnknownQueue, InvalidOption or BrokerUnavailable.
    """
    app = app or get_app()
    given = (("queue", queue), ("priority", priority), ("countdown", countdown), ("eta", eta), ("headers", headers))
    options = {k: v for k, v in given if v is not None}
    return app.task_named(name).apply_async(args=list(args), kwargs=kwargs or {}, task_id=task_id, **options)
