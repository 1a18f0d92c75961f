"""`taskkit submit`, `taskkit result`, `taskkit sweep`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from celery.exceptions import TimeoutError as CeleryTimeout

from .. import results
from ..bulk import submit_many
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
@click.option(
    "--each",
    type=click.File("r"),
    metavar="FILE",
    help="One run per line of a JSON-lines file (- for stdin): an args array, a kwargs object, or {args, kwargs}.",
)
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
    each: Any,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Queue TASK by name; prints its id (or, with --wait, its result). With --each, one run per line."""
    if each is not None:
        if args or kwargs:
            raise click.UsageError("--each gives every run its arguments; leave out --args and --kwargs")
        _submit_each(cli, task, each, queue, priority, countdown, wait, timeout, as_json)
        return
    res = submit_task(task, args=args or [], kwargs=kwargs, queue=queue, priority=priority, countdown=countdown, app=cli.app)
    if not wait:
        emit({"id": res.id}, as_json, lambda d: d["id"])
        return
    info = results.wait(res.id, timeout=timeout, app=cli.app)
    emit(info, as_json, _human_result)
    if info["state"] != "SUCCESS":
        sys.exit(1)


def _calls(lines: Any) -> list[Any]:
    calls = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            call = json.loads(line)
        except ValueError as exc:
            raise click.UsageError(f"line {number} of --each is not JSON ({exc}); nothing was queued") from None
        if isinstance(call, dict) and call and set(call) <= {"args", "kwargs"}:
            call = (call.get("args") or [], call.get("kwargs") or {})
        calls.append(call)
    return calls


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr, fed (done, total), when stderr is a terminal; None otherwise (scripts parse the output)."""
    if not total or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True, show_percent=True) as bar:
        yield lambda done, _total: bar.update(done - bar.pos)


def _submit_each(
    cli: CliContext, task: str, lines: Any, queue: Any, priority: Any, countdown: Any, wait: bool, timeout: float, as_json: bool
) -> None:
    calls = _calls(lines)
    with _progress("publishing", len(calls)) as on_batch:
        done = submit_many(task, calls, queue=queue, priority=priority, countdown=countdown, on_batch=on_batch, app=cli.app)
    if not as_json:
        click.echo(f"queued {len(done):,} runs of {task}", err=True)
    if not wait:
        emit({"task": task, "ids": done.ids}, as_json, lambda d: "\n".join(d["ids"]))
        return
    with _progress("waiting", len(done)) as on_progress:
        counts = done.wait(timeout=timeout, on_progress=on_progress)
    emit(
        {"task": task, "runs": len(done), "states": counts},
        as_json,
        lambda d: ", ".join(f"{k}: {v:,}" for k, v in sorted(d["states"].items())),
    )
    if set(counts) != {"SUCCESS"}:
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
