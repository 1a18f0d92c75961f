"""Submitting tasks by name, and submitting a recorded run again: the calls the CLI, notebooks and runbooks share."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from celery.result import AsyncResult

from .app import TaskkitApp, get_app
from .capture.recorder import recorded_call
from .errors import InvalidArguments


def submit(
    name: str,
    *,
    args: list[Any] | tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    expires: float | datetime | None = None,
    headers: dict[str, Any] | None = None,
    task_id: str | None = None,
    app: TaskkitApp | None = None,
) -> AsyncResult:
    """Queue task `name`. Everything is checked first; on any error nothing is queued.

    `expires`: seconds from now, or an aware datetime, after which a worker drops it unrun.

    Raises UnknownTask, InvalidArguments, UnknownQueue, InvalidOption or BrokerUnavailable.
    """
    app = app or get_app()
    given = (("queue", queue), ("priority", priority), ("countdown", countdown), ("eta", eta), ("expires", expires), ("headers", headers))
    options = {k: v for k, v in given if v is not None}
    return app.task_named(name).apply_async(args=list(args), kwargs=kwargs or {}, task_id=task_id, **options)


def rerun(
    task_id: str,
    *,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    app: TaskkitApp | None = None,
) -> AsyncResult:
    """Submit a recorded run again with its original arguments, queue and priority.

    Any of them can be overridden. The new run records `rerun_of` = task_id. Refuses when
    the original arguments were cut (longer than history.max_value_bytes) and not given.
    """
    app = app or get_app()
    call = recorded_call(app, task_id)
    for part, given in (("args", args), ("kwargs", kwargs)):
        if given is None and part in call["cut"]:
            raise InvalidArguments(
                call["task"], f"the recorded {part} of {task_id} were cut at history.max_value_bytes; pass {part} to rerun it"
            )
    return submit(
        call["task"],
        args=json.loads(call["args"]) if args is None else args,
        kwargs=json.loads(call["kwargs"]) if kwargs is None else kwargs,
        queue=queue or call["queue"],
        priority=call["priority"] if priority is None else priority,
        headers={"rerun_of": task_id},
        app=app,
    )
