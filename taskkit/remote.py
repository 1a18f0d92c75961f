"""The remote-control command taskkit adds to its workers: `taskkit_status`.

Everything a fleet view shows of one worker — pool size, active, reserved and scheduled
tasks, queues, processed count, uptime — in one broadcast; Celery's own commands need
five (stats, active, reserved, scheduled, active_queues). Registered when a worker
imports taskkit.app, which every `celery -A taskkit.app worker` does.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from celery.worker import state as worker_state
from celery.worker.control import inspect_command
from celery.worker.request import Request

COMMAND = "taskkit_status"


def _eta_tasks(timer: Any) -> int:
    """Tasks held for their ETA: the timer also holds heartbeats and other entries (as Celery's `scheduled` skips them)."""
    if timer is None:
        return 0
    return sum(1 for waiting in timer.schedule.queue if isinstance((getattr(waiting.entry, "args", None) or [None])[0], Request))


@inspect_command(name=COMMAND)
def taskkit_status(state: Any, **_: Any) -> dict[str, Any]:
    """Pool, active/reserved/scheduled tasks, queues, processed and uptime of this worker."""
    consumer = state.consumer
    pool = consumer.pool.info if consumer.pool is not None else {}
    active = state.tset(worker_state.active_requests)
    controller = consumer.controller
    return {
        "pool": len(pool.get("processes") or ()) or pool.get("max-concurrency"),
        "max_concurrency": pool.get("max-concurrency"),
        "prefetch_count": consumer.qos.value if consumer.qos is not None else None,
        "active": len(active),
        "reserved": len(state.tset(worker_state.reserved_requests) - active),
        "scheduled": _eta_tasks(consumer.timer),
        "queues": sorted(q.name for q in consumer.task_consumer.queues) if consumer.task_consumer else [],
        "processed": sum(worker_state.total_count.values()),
        "uptime": round((datetime.now(UTC) - controller.startup_time).total_seconds()) if controller else None,
        "pid": os.getpid(),
    }
