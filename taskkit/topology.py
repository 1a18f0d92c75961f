"""Queues, priorities and routing rules: where a task goes and how it retries.

Precedence for a task's options, highest first: what the caller passes to submit, what the
task declares (`@app.task(queue=..., max_retries=...)`), the first route rule whose glob
matches the task name, then the queue's default priority and the [retry] defaults.
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
    """What a task will get, and which rule decided each part."""

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
        self.rule_for = lru_cache(maxsize=4096)(self._rule_for)  # route() is on the publish path

    def kombu_queues(self) -> list[Queue]:
        return [Queue(name, routing_key=name) for name in self.queues]

    def _rule_for(self, task_name: str) -> Route | None:
        return next((r for r in self.routes if fnmatchcase(task_name, r.match)), None)

    def route(self, name: str, args: Any = None, kwargs: Any = None, options: Any = None, task: Any = None, **kw: Any) -> dict[str, Any]:
        """Celery router (task_routes): the queue and default priority for a task name."""
        rule = self.rule_for(name)
        queue = rule.queue if rule and rule.queue else DEFAULT_QUEUE
        priority = rule.priority if rule and rule.priority is not None else self.queues[queue]
        return {"queue": queue, "priority": priority}

    def explain(self, name: str, task: Any = None) -> Decision:
        """Resolve queue, priority and retry policy for `name`, naming the deciding rule."""
        rule = self.rule_for(name)
        rule_label = f"route #{rule.index} {rule.match!r}" if rule else ""
        declared = dict(getattr(task, "taskkit_declared", {}) or {})
        decided: dict[str, str] = {}

        def pick(key: str, from_rule: Any, fallback: Any, fallback_label: str) -> Any:
            if key in declared and declared[key] is not None:
                decided[key] = "task option"
                return declared[key]
            if from_rule is not None:
                decided[key] = rule_label
                return from_rule
            decided[key] = fallback_label
            return fallback

        queue = pick("queue", rule.queue if rule else None, DEFAULT_QUEUE, "default queue")
        priority = pick("priority", rule.priority if rule else None, self.queues.get(queue, 5), f"queue {queue!r} default")
        retry = {k: pick(k, rule.retry.get(k) if rule else None, self.retry_defaults[k], "[retry] defaults") for k in ROUTE_RETRY_KEYS}
        sources = {decided.pop(k) for k in ROUTE_RETRY_KEYS}
        decided["retry"] = " + ".join(sorted(sources))
        return Decision(name, queue, priority, RetryPolicy(**retry), decided)
