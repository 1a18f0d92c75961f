"""`taskkit submit`, `taskkit result`, `taskkit sweep`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from celery.exceptions import TimeoutError as CeleryTimeout

from .. import results
from ..client import submit as submit_task
from ..errors import WaitTimeout
from ..tasks import science
from .common import CliContext, args_option, emit, json_option, kwargs_option, pass_cli, priority_option, queue_option


def _human_result(info: dict[str, Any]) -> str:
    return "\n".join(f"{k:<10} {json.dumps(v, default=str) if not isinstance(v, str) else v}" for k, v in info.items())


@click.command("submit")
@click.argument("task")
@args_option
@kwargs_option
@queue_option
@priority_option
@click.option("--countdown", type=float, help="Seconds to wait before running.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds --wait waits.")
@json_option
@pass_cli
def submit(
    cli: CliContext,
    task: str,
    args: list[Any] | None,
    kwargs: dict[str, Any] | None,
    queue: str | None,
    priority: int | None,
    countdown: float | None,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Queue TASK by name; prints its id (or, with --wait, its result)."""
    res = submit_task(task, args=args or [], kwargs=kwargs, queue=queue, priority=priority, countdown=countdown, app=cli.app)
    if not wait:
        emit({"id": res.id}, as_json, lambda d: d["id"])
        return
    info = results.wait(res.id, timeout=timeout, app=cli.app)
    emit(info, as_json, _human_result)
    if info["state"] != "SUCCESS":
        sys.exit(1)


@click.command("result")
@click.argument("task_id")
@json_option
@pass_cli
def result(cli: CliContext, task_id: str, as_json: bool) -> None:
    """Show the state, result or error, and progress of a task."""
    emit(results.result(task_id, app=cli.app), as_json, _human_result)


def _floats(value: str) -> list[float]:
    try:
        return [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


@click.command("sweep")
@click.option("--betas", default=",".join(map(str, science.DEFAULT_BETAS)), show_default=True, help="Infection rates to sweep.")
@click.option("--gammas", default=",".join(map(str, science.DEFAULT_GAMMAS)), show_default=True, help="Recovery rates to sweep.")
@click.option("--replicates", type=click.IntRange(1, 100_000), default=200, show_default=True, help="Epidemics simulated per grid point.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True, help="Seconds to wait for the sweep.")
@json_option
@pass_cli
def sweep(cli: CliContext, betas: str, gammas: str, replicates: int, timeout: float, as_json: bool) -> None:
    """Run the sample SIR parameter sweep on the workers and print the results table."""
    res = science.start_sweep(_floats(betas), _floats(gammas), replicates=replicates, app=cli.app)

    def progress(done: int, total: int) -> None:
        tty = sys.stderr.isatty()  # redraw one line on a terminal, one line per step in a log
        click.echo(f"{chr(13) if tty else ''}sweep {res.id}: {done}/{total} points", nl=done == total or not tty, err=True)

    try:
        rows = science.wait_sweep(res, timeout=timeout, on_progress=progress)
    except CeleryTimeout:
        raise WaitTimeout(res.id, timeout) from None
    emit(rows, as_json, lambda r: science.sweep_frame(r).to_string(float_format=lambda x: f"{x:.3f}"))


commands = [submit, result, sweep]
