"""`taskkit dlq list|show|replay|drop|purge`: dead letters."""

from __future__ import annotations

import time
from typing import Any

import click

from .. import deadletters
from .common import CliContext, args_option, emit, json_option, kwargs_option, pass_cli, table


@click.group("dlq")
def dlq() -> None:
    """Tasks that failed for good: inspect, replay, drop."""


def _age(ts: float) -> str:
    seconds = time.time() - ts
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def _list_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no dead letters"
    cells = [
        (e["id"], e["task"], e["queue"], e["exc_type"], e.get("attempts"), _age(e["failed_at"]), "yes" if e["replayed"] else "")
        for e in rows
    ]
    return table(cells, ["id", "task", "queue", "exception", "attempts", "age", "replayed"])


@dlq.command("list")
@click.option("--queue", help="Only this queue.")
@click.option("--task", help="Only this task name.")
@click.option("--exc-type", help="Only this exception type, e.g. TimeLimitExceeded.")
@click.option("--since", help="Failed within this age (30m, 24h, 7d).")
@click.option("--limit", type=int, default=deadletters.LIST_LIMIT, show_default=True)
@json_option
@pass_cli
def list_(cli: CliContext, queue: str | None, task: str | None, exc_type: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, newest first."""
    rows = deadletters.entries(queue=queue, task=task, exc_type=exc_type, since=since, limit=limit, app=cli.app)
    emit(rows, as_json, _list_table)


@dlq.command("show")
@click.argument("task_id")
@json_option
@pass_cli
def show(cli: CliContext, task_id: str, as_json: bool) -> None:
    """Show one dead letter: message, exception, traceback, replay state."""
    entry = deadletters.get(task_id, app=cli.app)

    def human(e: dict[str, Any]) -> str:
        lines = [f"{k:<12} {v}" for k, v in e.items() if k != "traceback"]
        return "\n".join([*lines, "", e.get("traceback", "").rstrip()])

    emit(entry, as_json, human)


@dlq.command("replay")
@click.argument("task_ids", nargs=-1, required=True)
@click.option("--queue", help="Send to this queue instead of the original one.")
@args_option
@kwargs_option
@click.option("--force", is_flag=True, help="Replay dead letters that were already replayed.")
@json_option
@pass_cli
def replay(cli: CliContext, task_ids: tuple[str, ...], queue: str | None, args: list[Any] | None, kwargs: dict[str, Any] | None,
           force: bool, as_json: bool) -> None:  # fmt: skip
    """Send dead letters again (optionally with new --args/--kwargs); each is replayed once unless --force."""
    done = deadletters.replay(list(task_ids), queue=queue, args=args, kwargs=kwargs, force=force, app=cli.app)
    emit(
        done,
        as_json,
        lambda rows: table([(r["id"], r["replay_id"], r["queue"], r["status"]) for r in rows], ["id", "replay id", "queue", "status"]),
    )


@dlq.command("drop")
@click.argument("task_ids", nargs=-1, required=True)
@pass_cli
def drop(cli: CliContext, task_ids: tuple[str, ...]) -> None:
    """Delete dead letters."""
    click.echo(f"dropped {deadletters.drop(list(task_ids), app=cli.app)}")


@dlq.command("purge")
@click.option("--queue", help="Only this queue's dead letters.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def purge(cli: CliContext, queue: str | None, yes: bool) -> None:
    """Delete every dead letter (of one queue)."""
    count = deadletters.count(queue=queue, app=cli.app)
    if not yes:
        click.confirm(f"Delete {count} dead letter(s){f' of queue {queue}' if queue else ''}?", abort=True)
    click.echo(f"purged {deadletters.purge(app=cli.app, queue=queue)}")


commands = [dlq]
