"""Workers and queues, seen from outside: ping, depth, health."""

from __future__ import annotations

import time
from typing import Any

from .app import TaskkitApp
from .broker import redis_client

PING_TIMEOUT = 1.0  # seconds to wait for workers' replies


def ping(app: TaskkitApp, *, timeout: float = PING_TIMEOUT) -> dict[str, bool]:
    """Worker hostname → answered. Workers that do not answer within `timeout` are absent."""
    replies = app.control.ping(timeout=timeout) or []
    return {host: reply.get("ok") == "pong" for r in replies for host, reply in r.items()}


def queue_depths(app: TaskkitApp) -> dict[str, int]:
    """Waiting messages per declared queue, every priority level counted, in one round trip."""
    names = list(app.topology.queues)
    with redis_client(app) as client:
        pipe = client.pipeline(transaction=False)
        for name in names:
            for key in app.keys.queue_levels(name):
                pipe.llen(key)
        counts = pipe.execute()
    levels = len(counts) // len(names)
    return {name: sum(counts[i * levels : (i + 1) * levels]) for i, name in enumerate(names)}


def health(app: TaskkitApp) -> dict[str, Any]:
    """Redis round-trip latency, live workers and backlog per queue."""
    with redis_client(app) as client:
        start = time.perf_counter()
        client.ping()
        latency_ms = (time.perf_counter() - start) * 1000
    depths = queue_depths(app)
    workers = ping(app)
    return {
        "redis_latency_ms": round(latency_ms, 3),
        "workers": len(workers),
        "backlog": depths,
        "backlog_total": sum(depths.values()),
    }
