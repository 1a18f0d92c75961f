"""`taskkit queues`, `peek`, `purge`, `pause`, `resume`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from .. import control, queues
from .common import CliContext, cell, check_answers, destination_option, emit, json_option, pass_cli, replies_table, table, timeout_option

undeclared_option = click.option("--undeclared", is_flag=True, help="Also a queue taskkit.toml does not declare (see `taskkit queues`).")


def _levels(levels: dict[int, int]) -> str:
    return " ".join(f"p{p}:{n}" for p, n in sorted(levels.items()))


def _queues_table(rows: list[dict[str, Any]]) -> str:
    def consumers(r: dict[str, Any]) -> str:
        return "?" if r["consumers"] is None else f"{len(r['consumers'])} {','.join(r['consumers'])}".rstrip()

    return table(
        [
            (
                r["name"] + ("" if r["declared"] else " (undeclared)"),
                r["priority"],
                r["waiting"],
                _levels(r["levels"]),
                r["scheduled"],
                r["unacked"],
                consumers(r),
            )
            for r in rows
        ],
        ["queue", "priority", "waiting", "levels", "scheduled", "unacked", "consumers"],
    )


@click.command("queues")
@click.option("--no-consumers", is_flag=True, help="Skip asking the workers which queues they consume (Redis only, instant).")
@timeout_option
@json_option
@pass_cli
def queues_cmd(cli: CliContext, no_consumers: bool, timeout: float, as_json: bool) -> None:
    """Every declared queue: waiting (per priority level), scheduled, unacked, consumers; then undeclared ones with messages."""
    rows = [asdict(q) for q in control.queue_info(consumers=not no_consumers, timeout=timeout, app=cli.app)]
    emit(rows, as_json, _queues_table)


@click.command("peek")
@click.argument("queue")
@click.option("-n", "count", type=int, default=queues.PEEK_COUNT, show_default=True, help="How many messages.")
@undeclared_option
@json_option
@pass_cli
def peek(cli: CliContext, queue: str, count: int, undeclared: bool, as_json: bool) -> None:
    """The next messages of QUEUE, in the order workers will take them; nothing is consumed."""
    rows = [asdict(m) for m in queues.peek(queue, count=count, undeclared=undeclared, app=cli.app)]
    emit(
        rows,
        as_json,
        lambda rs: table(
            [(i, r["priority"], r["task"], r["id"], cell(r["args"]), cell(r["kwargs"]), r["eta"] or "") for i, r in enumerate(rs, 1)],
            ["#", "priority", "task", "id", "args", "kwargs", "eta"],
        ),
    )


@click.command("purge")
@click.argument("queue")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@undeclared_option
@json_option
@pass_cli
def purge(cli: CliContext, queue: str, yes: bool, undeclared: bool, as_json: bool) -> None:
    """Delete every waiting message of QUEUE (all priority levels). Asks first unless --yes."""
    queues.check_queue(queue, app=cli.app, undeclared=undeclared)  # before asking
    if not yes:
        waiting = queues.depth(queue, app=cli.app)
        click.confirm(f"Delete {waiting} waiting message(s) from {queue!r}? This cannot be undone", abort=True, err=True)
    removed = queues.purge_queue(queue, undeclared=undeclared, app=cli.app)
    emit({"queue": queue, "purged": removed}, as_json, lambda d: f"purged {d['purged']} message(s) from {d['queue']}")


def _consumer_command(name: str, call: Any, doc: str) -> click.Command:
    @click.command(name, help=doc)
    @click.argument("queue")
    @destination_option
    @timeout_option
    @json_option
    @pass_cli
    def command(cli: CliContext, queue: str, destination: tuple[str, ...], timeout: float, as_json: bool) -> None:
        out = call(queue, destination=destination, timeout=timeout, app=cli.app)
        emit(out, as_json, replies_table)
        check_answers(out, timeout)

    return command


pause = _consumer_command("pause", control.pause, "Stop workers (all, or -d) taking messages from QUEUE; running tasks finish.")
resume = _consumer_command("resume", control.resume, "Make workers (all, or -d) consume QUEUE again.")

commands = [queues_cmd, peek, purge, pause, resume]
