"""Queues, priorities and routing rules: where a task goes and how it retries, decided once.

`Topology.decide` is the one decision. Each option is taken from the first of these that
sets it, highest first:

1. the call: `queue=` / `priority=` passed to submit, apply_async or send_task;
2. the task: what it declares (`@app.task(queue=..., priority=..., max_retries=...)`);
3. the first `[[routes]]` rule whose glob matches the task name;
4. the fallback: queue "default"; priority the default of the queue chosen above;
   retry policy the `[retry]` defaults.

Each option is decided on its own: a route's priority applies to a task that declares its
own queue. `apply_async` stamps the decision on the message, Celery's router (for plain
`send_task`) asks the same function, and `taskkit routes explain` prints it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from kombu import Queue

from .config import ROUTE_RETRY_KEYS, Route, Settings

DEFAULT_QUEUE = "default"
CALL, TASK = "call option", "task option"  # what decided an option, as `explain` prints it


@dataclass(frozen=True)
class RetryPolicy:
    on: tuple[str, ...]
    max_retries: int
    backoff: float
    backoff_max: float
    jitter: bool

    def describe(self) -> str:
        if not self.on or not self.max_retries:
            return "no automatic retry"
        jitter = ", equal jitter" if self.jitter else ""
        return (
            f"on {', '.join(self.on)}; up to {self.max_retries} retries; "
            f"backoff {self.backoff:g}s doubling, capped at {self.backoff_max:g}s{jitter}"
        )


@dataclass(frozen=True)
class Decision:
    """What a task's message gets, and which rule decided each part."""

    task: str
    queue: str
    priority: int
    retry: RetryPolicy
    decided_by: Mapping[str, str] = field(default_factory=dict)


class Topology:
    def __init__(self, settings: Settings) -> None:
        self.queues: Mapping[str, int] = dict(settings.queues)
        self.routes: tuple[Route, ...] = settings.routes
        self.retry_defaults = {k: getattr(settings.retry, k) for k in ROUTE_RETRY_KEYS}
        self.rule_for = lru_cache(maxsize=4096)(self._rule_for)  # decide() is on the publish path

    def kombu_queues(self) -> list[Queue]:
        return [Queue(name, routing_key=name) for name in self.queues]

    def _rule_for(self, task_name: str) -> Route | None:
        return next((r for r in self.routes if fnmatchcase(task_name, r.match)), None)

    def decide(self, name: str, declared: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None) -> Decision:
        """Queue, priority and retry policy for task `name` with the call's `options`."""
        rule = self.rule_for(name)
        layers: list[tuple[str, Mapping[str, Any]]] = []
        if options:
            queue = options.get("queue")
            layers.append((CALL, {"queue": getattr(queue, "name", queue), "priority": options.get("priority")}))
        if declared:
            layers.append((TASK, declared))
        if rule is not None:
            layers.append((f"route #{rule.index} {rule.match!r}", {"queue": rule.queue, "priority": rule.priority, **rule.retry}))
        decided: dict[str, str] = {}

        def pick(key: str, fallback: Any, fallback_label: str) -> Any:
            for label, values in layers:
                if values.get(key) is not None:
                    decided[key] = label
                    return values[key]
            decided[key] = fallback_label
            return fallback

        queue = pick("queue", DEFAULT_QUEUE, "default queue")
        priority = pick("priority", self.queues.get(queue, self.queues[DEFAULT_QUEUE]), f"queue {queue!r} default")
        retry = {k: pick(k, self.retry_defaults[k], "[retry] defaults") for k in ROUTE_RETRY_KEYS}
        decided["retry"] = " + ".join(sorted({decided.pop(k) for k in ROUTE_RETRY_KEYS}))
        return Decision(name, queue, priority, RetryPolicy(**retry), decided)

    def route(self, name: str, args: Any = None, kwargs: Any = None, options: Any = None, task: Any = None, **kw: Any) -> dict[str, Any]:
        """Celery's router (task_routes): the same decision, for messages sent by name."""
        d = self.decide(name, getattr(task, "taskkit_declared", None), options)
        return {"queue": d.queue, "priority": d.priority}
