"""`taskkit history`, `taskkit rerun`, `taskkit report`: the run history."""

from __future__ import annotations

from typing import Any

import click

from ..client import rerun as rerun_call
from .common import CliContext, args_option, emit, json_option, kwargs_option, pass_cli, priority_option, queue_option, table

RUN_COLUMNS = ["id", "task", "state", "queue", "worker", "attempts", "queue_wait", "runtime", "exc_type"]
EVENT_COLUMNS = ["ts", "event", "task", "id", "queue", "worker", "attempt", "exc_type"]


def _frame_table(df, columns: list[str]) -> str:
    if df.empty:
        return "no runs recorded in this window"
    shown = df[columns].round(3).astype(object).where(df[columns].notna(), None)
    return table(shown.itertuples(index=False), columns)


@click.command("history")
@click.option("--since", default="1h", show_default=True, help="Window start: an age (30m, 24h, 7d).")
@click.option("--until", default=None, help="Window end: an age (default: now).")
@click.option("--task", help="Only this task name.")
@click.option("--state", help="Only runs in this state (SUCCESS, FAILURE, RETRY, STARTED, …).")
@click.option("--queue", help="Only this queue.")
@click.option("--worker", help="Only this worker hostname.")
@click.option("--events", "show_events", is_flag=True, help="One row per event instead of one per run.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Rows shown (newest).")
@json_option
@pass_cli
def history(cli: CliContext, since: str, until: str | None, task: str | None, state: str | None, queue: str | None,
            worker: str | None, show_events: bool, limit: int, as_json: bool) -> None:  # fmt: skip
    """Show recorded task runs (or events) from the durable run history."""
    from .. import history as reader  # pandas: loaded only by the commands that read the history

    filters = {"since": since, "until": until, "task": task, "queue": queue, "worker": worker, "app": cli.app}
    if show_events:
        df, columns = reader.events(**filters), EVENT_COLUMNS
    else:
        df, columns = reader.runs(state=state, **filters), RUN_COLUMNS
    df = df.tail(limit)
    emit(df.to_dict(orient="records"), as_json, lambda _: _frame_table(df, columns))


@click.command("rerun")
@click.argument("task_id")
@args_option
@kwargs_option
@queue_option
@priority_option
@json_option
@pass_cli
def rerun(cli: CliContext, task_id: str, args: list[Any] | None, kwargs: dict[str, Any] | None, queue: str | None,
          priority: int | None, as_json: bool) -> None:  # fmt: skip
    """Submit a recorded run again with its original arguments (or those given); prints the new id."""
    res = rerun_call(task_id, args=args, kwargs=kwargs, queue=queue, priority=priority, app=cli.app)
    emit({"id": res.id, "rerun_of": task_id}, as_json, lambda d: d["id"])


@click.command("report")
@click.option("--since", default="24h", show_default=True, help="Window start: an age (30m, 24h, 7d).")
@click.option("--until", default=None, help="Window end: an age (default: now).")
@click.option("--format", "fmt", default="json", show_default=True, help="json, csv or html.")
@pass_cli
def report(cli: CliContext, since: str, until: str | None, fmt: str) -> None:
    """Summarise a window of the run history: counts, failure/retry rates, percentiles, top errors."""
    from .. import reports  # pandas: loaded only by the commands that read the history

    click.echo(reports.render(reports.summary(since=since, until=until, app=cli.app), fmt))


commands = [history, rerun, report]
