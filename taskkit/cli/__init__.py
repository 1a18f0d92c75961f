"""The `taskkit` command: a thin layer over the taskkit Python API."""

from __future__ import annotations

from typing import Any

import click

from ..errors import TaskkitError
from . import config, dev, dlq, health, history, metrics, notebooks, queues, routes, schedules, tasks, workers
from .common import CliContext


class TaskkitGroup(click.Group):
    """Turns every TaskkitError into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TaskkitError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=TaskkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    envvar="TASKKIT_CONFIG",
    type=click.Path(dir_okay=False),
    help="taskkit.toml to use (default: $TASKKIT_CONFIG, then ./taskkit.toml).",
)
@click.version_option(package_name="taskkit")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Background jobs on Celery + Redis: local stack, submit, inspect."""
    ctx.obj = CliContext(config_path)


for command in (
    *dev.commands,
    *tasks.commands,
    *routes.commands,
    *config.commands,
    *history.commands,
    *dlq.commands,
    *queues.commands,
    *workers.commands,
    *schedules.commands,
    *notebooks.commands,
    *metrics.commands,
    *health.commands,
):
    main.add_command(command)
