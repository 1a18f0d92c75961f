"""`taskkit history`, `taskkit rerun`, `taskkit report`: the run history."""

from __future__ import annotations

import click

from .. import reports
from .. import runs as runs_api
from .common import CliContext, emit, json_option, parse_json, pass_cli, table

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
    filters = {"since": since, "until": until, "task": task, "queue": queue, "worker": worker}
    if show_events:
        df, columns = runs_api.events(cli.app, **filters), EVENT_COLUMNS
    else:
        df, columns = runs_api.runs(cli.app, state=state, **filters), RUN_COLUMNS
    df = df.tail(limit)
    emit(df.to_dict(orient="records"), as_json, lambda _: _frame_table(df, columns))


@click.command("rerun")
@click.argument("task_id")
@click.option("--args", "args_json", metavar="JSON", help="Replace the recorded positional arguments.")
@click.option("--kwargs", "kwargs_json", metavar="JSON", help="Replace the recorded keyword arguments.")
@click.option("--queue", help="Send to this queue instead.")
@click.option("--priority", type=click.IntRange(0, 9), help="Use this priority instead.")
@json_option
@pass_cli
def rerun(cli: CliContext, task_id: str, args_json: str | None, kwargs_json: str | None, queue: str | None,
          priority: int | None, as_json: bool) -> None:  # fmt: skip
    """Submit a recorded run again with its original arguments; prints the new id."""
    res = runs_api.rerun(
        task_id, app=cli.app, queue=queue, priority=priority,
        args=parse_json(args_json, list, "--args") if args_json else None,
        kwargs=parse_json(kwargs_json, dict, "--kwargs") if kwargs_json else None,
    )  # fmt: skip
    emit({"id": res.id, "rerun_of": task_id}, as_json, lambda d: d["id"])


@click.command("report")
@click.option("--since", default="24h", show_default=True, help="Window start: an age (30m, 24h, 7d).")
@click.option("--until", default=None, help="Window end: an age (default: now).")
@click.option("--format", "fmt", type=click.Choice(reports.FORMATS), default="json", show_default=True)
@pass_cli
def report(cli: CliContext, since: str, until: str | None, fmt: str) -> None:
    """Summarise a window of the run history: counts, failure/retry rates, percentiles, top errors."""
    click.echo(reports.render(reports.summary(cli.app, since=since, until=until), fmt))


commands = [history, rerun, report]
