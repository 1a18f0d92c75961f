"""`taskkit routes [explain TASK]`: where tasks go, and why."""

from __future__ import annotations

from dataclasses import asdict

import click

from ..routing import explain_route
from ..routing import routes as routes_table
from .common import CliContext, emit, json_option, pass_cli, priority_option, queue_option, table


@click.group("routes", invoke_without_command=True)
@json_option
@pass_cli
@click.pass_context
def routes(ctx: click.Context, cli: CliContext, as_json: bool) -> None:
    """List every registered task with its queue, priority and deciding rule."""
    if ctx.invoked_subcommand:
        return
    decisions = routes_table(app=cli.app)
    rows = [(d.task, d.queue, d.priority, d.decided_by["queue"], d.retry.describe()) for d in decisions]
    emit([asdict(d) for d in decisions], as_json, lambda _: table(rows, ["task", "queue", "priority", "rule", "retry"]))


@routes.command("explain")
@click.argument("task")
@queue_option
@priority_option
@json_option
@pass_cli
def explain(cli: CliContext, task: str, queue: str | None, priority: int | None, as_json: bool) -> None:
    """Show the queue, priority and retry policy TASK's message gets (with these call options), and which rule decided each."""
    d = explain_route(task, queue=queue, priority=priority, app=cli.app)
    rows = [
        ("queue", d.queue, d.decided_by["queue"]),
        ("priority", d.priority, d.decided_by["priority"]),
        ("retry", d.retry.describe(), d.decided_by["retry"]),
    ]
    emit(asdict(d), as_json, lambda _: f"{d.task}\n" + table(rows, ["option", "value", "decided by"]))


commands = [routes]
