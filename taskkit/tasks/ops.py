"""Operations tasks, thin wrappers over taskkit functions so beat can schedule them."""

from __future__ import annotations

from typing import Any

from celery import current_app, shared_task

from .. import results, status


@shared_task(name="taskkit.ops.health")
def health() -> dict[str, Any]:
    """Redis latency, live workers and backlog per queue."""
    return status.health(app=current_app)


@shared_task(name="taskkit.ops.cleanup_results")
def cleanup_results(older_than: float | None = None) -> dict[str, int]:
    """Delete results stored without a TTL and older than `older_than` seconds."""
    return results.cleanup_results(older_than=older_than, app=current_app)


@shared_task(name="taskkit.ops.report")
def report(since: str = "24h") -> dict[str, Any]:
    """Per-task counts, failure and retry rates, runtime and wait percentiles, top exceptions."""
    from .. import reports  # the read side: pandas loads in the process that runs a report, not in every worker

    return reports.summary(since=since, app=current_app)
