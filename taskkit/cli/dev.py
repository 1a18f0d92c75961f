"""`taskkit dev up|status|down`: the local stack."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from ..devstack import DevStack
from .common import CliContext, emit, json_option, pass_cli, table


@click.group("dev")
def dev() -> None:
    """Run a local Redis, worker and beat for a laptop or CI."""


def stack_options(f: Any) -> Any:
    f = click.option("--dir", "directory", help="Data, logs and state directory (default: [dev] dir).")(f)
    return click.option("--port", type=click.IntRange(1, 65535), help="Redis port on 127.0.0.1 (default: [dev] port).")(f)


def _describe(status: dict[str, Any]) -> str:
    if not status["running"]:
        return f"dev stack: not running ({status['dir']})"
    rows = [(name, p["pid"], "running" if p["alive"] else "DEAD", p["restarts"], p["log"]) for name, p in status["processes"].items()]
    answers = "answers" if status["redis_answers"] else "does NOT answer"
    return f"dev stack: {status['url']} ({answers})\n" + table(rows, ["process", "pid", "state", "restarts", "log"])


@dev.command("up")
@stack_options
@click.option("--detach", is_flag=True, help="Return once the stack is up instead of waiting for Ctrl-C.")
@pass_cli
def up(cli: CliContext, port: int | None, directory: str | None, detach: bool) -> None:
    """Start redis-server, a worker on every queue, and beat (restarted if one dies)."""
    stack = DevStack(cli.settings, port=port, directory=directory)
    stack.up()
    click.echo(_describe(stack.status()))
    s = cli.settings
    if s.broker.url or stack.port != s.dev.port or stack.dir != Path(s.dev.dir).resolve():
        # the stack's password is found through [dev] dir and port: point those at this stack
        click.echo(f"note: your config talks to another broker; to use this stack: unset TASKKIT_BROKER_URL; "
                   f"export TASKKIT_DEV_PORT={stack.port} TASKKIT_DEV_DIR={stack.dir}")  # fmt: skip
    if detach:
        return
    click.echo("Press Ctrl-C to stop.")

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and `kill` both stop the stack (a shell may start us with SIGINT ignored).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    unsupervised = False
    try:
        for p in stack.watch():
            if p.name == "supervisor":
                unsupervised = True
                click.echo(f"the supervisor exited; stopping the stack (see {p.log}.out)", err=True)
            else:
                click.echo(f"{p.name} died and was started again (restart {p.restarts}; see {p.log})", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        stack.down()
        click.echo("dev stack stopped")
    if unsupervised:
        sys.exit(1)


@dev.command("status")
@stack_options
@json_option
@pass_cli
def status(cli: CliContext, port: int | None, directory: str | None, as_json: bool) -> None:
    """Show whether the stack runs, its processes and logs."""
    emit(DevStack(cli.settings, port=port, directory=directory).status(), as_json, _describe)


@dev.command("down")
@stack_options
@pass_cli
def down(cli: CliContext, port: int | None, directory: str | None) -> None:
    """Stop every process of the stack."""
    stopped = DevStack(cli.settings, port=port, directory=directory).down()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "dev stack: nothing was running")


commands = [dev]
