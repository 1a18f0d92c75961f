"""The routes table: every registered task with the queue, priority and retry policy it gets, and why."""

from __future__ import annotations

from .app import TaskkitApp, get_app, user_tasks
from .kinds import PRIORITY, refuse
from .queues import check_queue
from .topology import Decision


def routes(*, app: TaskkitApp | None = None) -> list[Decision]:
    """One decision per registered task (Celery's own tasks left out), by name."""
    app = app or get_app()
    app.task_named("taskkit.ops.health")  # imports the configured task modules
    return [app.tasks[name].decide() for name in user_tasks(app) if hasattr(app.tasks[name], "decide")]


def explain_route(task: str, *, queue: str | None = None, priority: int | None = None, app: TaskkitApp | None = None) -> Decision:
    """What a message of `task` sent with these call options carries, and which rule decided each part."""
    app = app or get_app()
    named = app.task_named(task)
    if queue is not None:
        check_queue(queue, app=app)
    if priority is not None:
        refuse("priority", priority, PRIORITY)
    return named.decide({"queue": queue, "priority": priority})
