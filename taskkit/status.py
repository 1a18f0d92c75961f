"""How the deployment is doing, as plain data: Redis on its own, the one-call health summary,
and the snapshot a fleet view refreshes (taskkit.widgets.ClusterView)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import alerts, broker, deadletters, queues
from .app import TaskkitApp, get_app
from .capture import recorder
from .control import known_workers_read, ping, workers
from .queues import QueueInfo, queue_depths
from .schedules import Schedule, list_schedules

SNAPSHOT_TIMEOUT = 0.5  # seconds a snapshot waits for workers' replies
SNAPSHOT_SCHEDULES = 50  # schedules a snapshot reads (soonest first)


def redis_info(*, app: TaskkitApp | None = None) -> dict[str, Any]:
    """Redis on its own (no worker broadcast): latency_ms, version, memory, clients, evictions, AOF, role."""
    return broker.server_info(app or get_app())


def recorder_stats(*, app: TaskkitApp | None = None) -> dict[str, int]:
    """The run-history recorders' counters over every process: events written, failed writes, events dropped."""
    app = app or get_app()
    return broker.read(app, recorder.stats_read(app))[0]


def health(*, app: TaskkitApp | None = None) -> dict[str, Any]:
    """Redis round-trip latency, live workers, backlog per queue (this one asks the workers), and the
    `[alerts]` thresholds checked: alerts firing now, and those that started or stopped with this check."""
    app = app or get_app()
    latency = broker.server_info(app)["latency_ms"]
    depths = queue_depths(app=app)
    live = ping(app=app)
    checked = alerts.check(app=app)
    return {
        "redis_latency_ms": latency,
        "workers": len(live),
        "backlog": depths,
        "backlog_total": sum(depths.values()),
        "alerts": checked["firing"],
        "fired": checked["fired"],
        "resolved": checked["resolved"],
    }


@dataclass(frozen=True)
class Snapshot:
    """The fleet at one moment: what ClusterView shows. Plain data; `cost` says what reading it took."""

    at: datetime
    workers: dict[str, dict[str, Any]]  # worker -> taskkit_status row
    missing: list[str]
    queues: list[QueueInfo]
    deadletters: dict[str, int]  # queue -> dead letters
    recorder: dict[str, int]  # written, failed, dropped
    redis: dict[str, Any]  # redis_info()
    schedules: list[Schedule]
    alerts: list[dict[str, Any]] = field(default_factory=list)  # active alerts, as the last health check left them
    cost: dict[str, float] = field(default_factory=dict)  # seconds per part: counts, redis, workers, schedules


def snapshot(*, timeout: float = SNAPSHOT_TIMEOUT, schedules: int = SNAPSHOT_SCHEDULES, app: TaskkitApp | None = None) -> Snapshot:
    """Everything ClusterView shows: queue and dead-letter counts, the recorder's counters, active
    alerts and the workers' names (their remote-control queues) in one pipelined round trip, Redis info, one
    broadcast to those workers (it returns when they have answered, at most `timeout`), the
    soonest schedules."""
    app = app or get_app()
    cost: dict[str, float] = {}

    def timed(part: str, call: Any) -> Any:
        start = time.perf_counter()
        try:
            return call()
        finally:
            cost[part] = time.perf_counter() - start

    reads = (
        queues.counts_read(app),
        deadletters.counts_read(app),
        recorder.stats_read(app),
        known_workers_read(app),
        alerts.active_read(app),
    )
    queue_rows, dead, counters, known, firing = timed("counts", lambda: broker.read(app, *reads))
    info = timed("redis", lambda: broker.server_info(app))
    # Named workers: the broadcast returns as soon as they have all answered (a dead one waits `timeout`).
    fleet = timed("workers", lambda: workers(destination=known, timeout=timeout, app=app) if known else {"replies": {}, "missing": []})
    listed = timed("schedules", lambda: list_schedules(limit=schedules, app=app))
    return Snapshot(
        at=datetime.now(UTC),
        workers=fleet["replies"],
        missing=fleet["missing"],
        queues=queue_rows,
        deadletters=dead,
        recorder=counters,
        redis=info,
        schedules=listed,
        alerts=firing,
        cost=cost,
    )
