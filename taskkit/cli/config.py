"""`taskkit config show`: the settings in force, passwords masked."""

from __future__ import annotations

import json

import click

from .common import CliContext, emit, json_option, pass_cli


@click.group("config")
def config_group() -> None:
    """Inspect configuration."""


@config_group.command("show")
@json_option
@pass_cli
def show(cli: CliContext, as_json: bool) -> None:
    """Print the effective settings (taskkit.toml + TASKKIT_*), secrets masked."""

    def human(data: dict) -> str:
        lines = [f"# from {data.pop('source')}"]
        for key, value in data.items():
            lines.append(f"{key} = {json.dumps(value, default=str)}")
        return "\n".join(lines)

    emit(cli.settings.public(), as_json, human)


commands = [config_group]
