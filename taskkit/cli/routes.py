"""`taskkit routes [explain TASK]`: where tasks go, and why."""

from __future__ import annotations

from dataclasses import asdict

import click

from ..app import user_tasks
from ..topology import Decision
from .common import CliContext, emit, json_option, pass_cli, table


def _decisions(cli: CliContext) -> list[Decision]:
    app = cli.app
    app.task_named("taskkit.ops.health")  # imports the configured task modules
    return [app.topology.explain(name, app.tasks[name]) for name in user_tasks(app)]


@click.group("routes", invoke_without_command=True)
@json_option
@pass_cli
@click.pass_context
def routes(ctx: click.Context, cli: CliContext, as_json: bool) -> None:
    """List every registered task with its queue, priority and deciding rule."""
    if ctx.invoked_subcommand:
        return
    decisions = _decisions(cli)
    rows = [(d.task, d.queue, d.priority, d.decided_by["queue"], d.retry.describe()) for d in decisions]
    emit([asdict(d) for d in decisions], as_json, lambda _: table(rows, ["task", "queue", "priority", "rule", "retry"]))


@routes.command("explain")
@click.argument("task")
@json_option
@pass_cli
def explain(cli: CliContext, task: str, as_json: bool) -> None:
    """Show the queue, priority and retry policy TASK gets, and which rule decided each."""
    d = cli.app.topology.explain(task, cli.app.task_named(task))
    rows = [
        ("queue", d.queue, d.decided_by["queue"]),
        ("priority", d.priority, d.decided_by["priority"]),
        ("retry", d.retry.describe(), d.decided_by["retry"]),
    ]
    emit(asdict(d), as_json, lambda _: f"{d.task}\n" + table(rows, ["option", "value", "decided by"]))


commands = [routes]
