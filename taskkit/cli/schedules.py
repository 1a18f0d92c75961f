"""`taskkit schedules …`: list, show, add, edit and fire schedules; what runs when."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

import click

from .. import schedules as api
from .common import CliContext, args_option, emit, json_option, kwargs_option, pass_cli, priority_option, queue_option, table


def _time(dt: datetime | None) -> str:
    return dt.isoformat(sep=" ", timespec="seconds") if dt else "-"


def _human(s: api.Schedule) -> str:
    rows = [
        ("schedule", s.describe()),
        ("task", s.task),
        ("args", s.args),
        ("kwargs", s.kwargs),
        ("queue", s.queue or "(from routes)"),
        ("priority", "(from queue)" if s.priority is None else s.priority),
        ("enabled", "yes" if s.enabled else "no"),
        ("source", "taskkit.toml" if s.declared else "runtime"),
        ("next run", _time(s.next_run_at)),
        ("last run", _time(s.last_run_at)),
        ("runs", s.total_run_count),
    ]
    return f"{s.name}\n" + "\n".join(f"  {k:<9} {v}" for k, v in rows)


every_option = click.option("--every", metavar="DURATION", help='Interval: "15m", "2h", "0.5s" or seconds.')
cron_option = click.option(
    "--cron", metavar="EXPR", help="Cron expression 'minute hour day-of-month month day-of-week' (needs --timezone)."
)
at_option = click.option("--at", metavar="TIME", help="One-off at an ISO time with offset, e.g. 2030-10-01T09:00:00+02:00.")
timezone_option = click.option("--timezone", metavar="TZ", help="IANA time zone of --cron (or of a naive --at), e.g. Europe/Berlin.")


@click.group("schedules")
def schedules_group() -> None:
    """Schedules in Redis: declared in taskkit.toml, or added here at run time."""


@schedules_group.command("list")
@click.option("--limit", type=int, help="Show at most this many (soonest first).")
@json_option
@pass_cli
def list_(cli: CliContext, limit: int | None, as_json: bool) -> None:
    """Every schedule: soonest next run first, then disabled and finished ones."""
    found = api.list_schedules(limit=limit, app=cli.app)
    rows = [
        (
            s.name,
            s.describe(),
            s.task,
            "yes" if s.enabled else "no",
            _time(s.next_run_at),
            _time(s.last_run_at),
            s.total_run_count,
            "toml" if s.declared else "runtime",
        )
        for s in found
    ]
    emit(
        [asdict(s) for s in found],
        as_json,
        lambda _: table(rows, ["name", "schedule", "task", "enabled", "next run", "last run", "runs", "source"]),
    )


@schedules_group.command("show")
@click.argument("name")
@click.option("--next", "count", type=int, default=api.NEXT_RUNS, show_default=True, help="How many next fire times to list.")
@json_option
@pass_cli
def show(cli: CliContext, name: str, count: int, as_json: bool) -> None:
    """One schedule: its timing, last run, run count and next fire times."""
    s = api.get_schedule(name, app=cli.app)
    times = api.next_runs(name, count=count, app=cli.app)
    data = {**asdict(s), "next_runs": times}
    emit(data, as_json, lambda _: _human(s) + "\n  next     " + ("\n           ".join(map(_time, times)) or "-"))


@schedules_group.command("add")
@click.argument("name")
@click.argument("task")
@every_option
@cron_option
@at_option
@timezone_option
@args_option
@kwargs_option
@queue_option
@priority_option
@click.option("--disabled", is_flag=True, help="Store it disabled; `enable` starts it.")
@json_option
@pass_cli
def add(cli: CliContext, name: str, task: str, disabled: bool, as_json: bool, **options: Any) -> None:
    """Add schedule NAME sending TASK: exactly one of --every, --cron (+ --timezone) or --at."""
    options["args"] = options["args"] or []
    s = api.add_schedule(name, task, enabled=not disabled, app=cli.app, **options)
    emit(asdict(s), as_json, lambda _: _human(s))


@schedules_group.command("update")
@click.argument("name")
@click.option("--task", help="Send this task instead.")
@every_option
@cron_option
@at_option
@timezone_option
@args_option
@kwargs_option
@queue_option
@priority_option
@json_option
@pass_cli
def update(cli: CliContext, name: str, as_json: bool, **options: Any) -> None:
    """Change a runtime schedule; what is not given stays. Beat applies it within one tick."""
    s = api.update_schedule(name, app=cli.app, **options)
    emit(asdict(s), as_json, lambda _: _human(s))


@schedules_group.command("enable")
@click.argument("name")
@json_option
@pass_cli
def enable(cli: CliContext, name: str, as_json: bool) -> None:
    """Resume sending NAME at its next regular time."""
    s = api.enable_schedule(name, app=cli.app)
    emit(asdict(s), as_json, lambda _: _human(s))


@schedules_group.command("disable")
@click.argument("name")
@json_option
@pass_cli
def disable(cli: CliContext, name: str, as_json: bool) -> None:
    """Stop sending NAME; its timing, last run and count stay."""
    s = api.disable_schedule(name, app=cli.app)
    emit(asdict(s), as_json, lambda _: _human(s))


@schedules_group.command("delete")
@click.argument("name")
@json_option
@pass_cli
def delete(cli: CliContext, name: str, as_json: bool) -> None:
    """Remove runtime schedule NAME and its run record."""
    api.delete_schedule(name, app=cli.app)
    emit({"deleted": name}, as_json, lambda d: f"deleted {d['deleted']}")


@schedules_group.command("run-now")
@click.argument("name")
@json_option
@pass_cli
def run_now(cli: CliContext, name: str, as_json: bool) -> None:
    """Send NAME's task once, now, without touching its schedule; prints the task id."""
    emit({"id": api.run_schedule_now(name, app=cli.app)}, as_json, lambda d: d["id"])


@schedules_group.command("upcoming")
@click.option("--window", default="24h", show_default=True, help='How far ahead: "90m", "24h", "7d" or seconds.')
@click.option("--limit", type=int, help="Show at most this many fire times.")
@json_option
@pass_cli
def upcoming(cli: CliContext, window: str, limit: int | None, as_json: bool) -> None:
    """Every fire time of every enabled schedule in the window, soonest first."""
    found = api.upcoming(window=window, limit=limit, app=cli.app)
    rows = [(_time(u.at), u.name, u.task) for u in found]
    emit(
        [asdict(u) for u in found],
        as_json,
        lambda _: table(rows, ["at", "name", "task"]) if rows else f"nothing scheduled in the next {window}",
    )


commands = [schedules_group]
