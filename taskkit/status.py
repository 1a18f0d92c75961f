"""How the deployment is doing, as plain data: Redis on its own, and the one-call health summary."""

from __future__ import annotations

from typing import Any

from . import broker
from .app import TaskkitApp, get_app
from .capture import recorder
from .control import ping
from .queues import queue_depths


def redis_info(*, app: TaskkitApp | None = None) -> dict[str, Any]:
    """Redis on its own (no worker broadcast): latency_ms, version, memory, clients, evictions, AOF, role."""
    return broker.server_info(app or get_app())


def recorder_stats(*, app: TaskkitApp | None = None) -> dict[str, int]:
    """The run-history recorders' counters over every process: events written, failed writes, events dropped."""
    app = app or get_app()
    return broker.read(app, recorder.stats_read(app))[0]


def health(*, app: TaskkitApp | None = None) -> dict[str, Any]:
    """Redis round-trip latency, live workers and backlog per queue (this one asks the workers)."""
    app = app or get_app()
    latency = broker.server_info(app)["latency_ms"]
    depths = queue_depths(app=app)
    workers = ping(app=app)
    return {"redis_latency_ms": latency, "workers": len(workers), "backlog": depths, "backlog_total": sum(depths.values())}
