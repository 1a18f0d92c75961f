"""`taskkit workers`, `revoke`, `rate-limit`, `pool grow|shrink|autoscale`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from .. import control
from .common import CliContext, cell, check_answers, destination_option, emit, json_option, pass_cli, replies_table, table, timeout_option

# ---------------------------------------------------------------- workers

VIEWS = ("stats", "active", "reserved", "scheduled", "registered", "queues", "revoked")


def _overview(out: dict[str, Any]) -> str:
    rows = [
        (w, r["pool"], r["prefetch_count"], r["active"], r["reserved"], r["scheduled"], r["processed"], r["uptime"], ",".join(r["queues"]))
        for w, r in sorted(out["replies"].items())
    ]
    return table(rows, ["worker", "pool", "prefetch", "active", "reserved", "scheduled", "processed", "uptime_s", "queues"])


def _tasks(out: dict[str, Any]) -> str:
    rows = []
    for worker, tasks in sorted(out["replies"].items()):
        for t in tasks or ():
            request = t.get("request", t)  # scheduled entries wrap the request
            rows.append(
                (worker, request.get("id"), request.get("name"), cell(request.get("args")), cell(request.get("kwargs")), t.get("eta", ""))
            )
    return table(rows, ["worker", "id", "task", "args", "kwargs", "eta"])


def _per_worker(render: Callable[[Any], str]) -> Callable[[dict[str, Any]], str]:
    return lambda out: "\n".join(f"{w}\n  " + render(r).replace("\n", "\n  ") for w, r in sorted(out["replies"].items()))


HUMAN = {
    "stats": _per_worker(lambda r: json.dumps(r, indent=2, default=str)),
    "active": _tasks,
    "reserved": _tasks,
    "scheduled": _tasks,
    "registered": _per_worker(lambda r: "\n".join(r or ["(none)"])),
    "queues": lambda out: table(
        [(w, ",".join(q["name"] for q in r or ())) for w, r in sorted(out["replies"].items())], ["worker", "queues"]
    ),
    "revoked": _per_worker(lambda r: "\n".join(r or ["(none)"])),
}


@click.command("workers")
@click.option("--stats", "view", flag_value="stats", help="Celery's full statistics per worker.")
@click.option("--active", "view", flag_value="active", help="Tasks running now.")
@click.option("--reserved", "view", flag_value="reserved", help="Tasks prefetched, not started.")
@click.option("--scheduled", "view", flag_value="scheduled", help="ETA/countdown tasks held by workers.")
@click.option("--registered", "view", flag_value="registered", help="Task names, with rate limits.")
@click.option("--queues", "view", flag_value="queues", help="Queues each worker consumes.")
@click.option("--revoked", "view", flag_value="revoked", help="Ids the workers hold as revoked.")
@destination_option
@timeout_option
@json_option
@pass_cli
def workers(cli: CliContext, view: str | None, destination: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Live workers: pool size, prefetch, active/reserved/scheduled tasks, queues (or one detail view)."""
    if view is None:
        out = control.workers(destination=destination, timeout=timeout, app=cli.app)
        emit(out, as_json, _overview)
    else:
        out = control.inspect("active_queues" if view == "queues" else view, destination=destination, timeout=timeout, app=cli.app)
        emit(out, as_json, HUMAN[view])
    check_answers(out, timeout)


# ---------------------------------------------------------------- commands


@click.command("revoke")
@click.argument("ids", nargs=-1)
@click.option("--name", "task_name", metavar="TASK", help="Revoke every message of this task waiting or held by a worker now.")
@click.option("--terminate", is_flag=True, help="Also kill the pool process running the task.")
@click.option("--signal", default="TERM", show_default=True, help="Signal for --terminate (TERM, KILL, …).")
@destination_option
@timeout_option
@json_option
@pass_cli
def revoke(
    cli: CliContext,
    ids: tuple[str, ...],
    task_name: str | None,
    terminate: bool,
    signal: str,
    destination: tuple[str, ...],
    timeout: float,
    as_json: bool,
) -> None:
    """Revoke tasks by ID (or all of one task with --name): workers drop them when they arrive."""
    out = control.revoke(
        ids, task_name=task_name, terminate=terminate, signal=signal, destination=destination, timeout=timeout, app=cli.app
    )
    if not out["ids"]:
        emit(out, as_json, lambda _: f"no waiting or held message of {task_name}: nothing to revoke")
        return
    emit(out, as_json, lambda o: f"revoked {len(o['ids'])}: {' '.join(o['ids'])}\n{replies_table(o)}")
    check_answers(out, timeout)


@click.command("rate-limit")
@click.argument("task")
@click.argument("limit")
@destination_option
@timeout_option
@json_option
@pass_cli
def rate_limit(cli: CliContext, task: str, limit: str, destination: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Set TASK's rate limit on the workers ("10/s", "100/m", "5/h"; 0 or none removes it)."""
    out = control.rate_limit(task, limit, destination=destination, timeout=timeout, app=cli.app)
    emit(out, as_json, replies_table)
    check_answers(out, timeout)


@click.group("pool")
def pool() -> None:
    """Grow, shrink or autoscale the workers' process pools."""


@pool.command("grow")
@click.argument("n", type=int, default=1)
@destination_option
@timeout_option
@json_option
@pass_cli
def grow(cli: CliContext, n: int, destination: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Add N processes to each worker's pool."""
    out = control.pool_grow(n, destination=destination, timeout=timeout, app=cli.app)
    emit(out, as_json, replies_table)
    check_answers(out, timeout)


@pool.command("shrink")
@click.argument("n", type=int, default=1)
@destination_option
@timeout_option
@json_option
@pass_cli
def shrink(cli: CliContext, n: int, destination: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Remove N idle processes from each worker's pool."""
    out = control.pool_shrink(n, destination=destination, timeout=timeout, app=cli.app)
    emit(out, as_json, replies_table)
    check_answers(out, timeout)


@pool.command("autoscale")
@click.argument("maximum", type=int)
@click.argument("minimum", type=int, default=0)
@destination_option
@timeout_option
@json_option
@pass_cli
def autoscale(cli: CliContext, maximum: int, minimum: int, destination: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Set the pool range of workers started with --autoscale."""
    out = control.autoscale(maximum, minimum, destination=destination, timeout=timeout, app=cli.app)
    emit(out, as_json, replies_table)
    check_answers(out, timeout)


commands = [workers, revoke, rate_limit, pool]
