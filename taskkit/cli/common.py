"""What every CLI command shares: settings and app loading, --json, tables."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from ..app import TaskkitApp, create_app
from ..config import Settings, load_settings


class CliContext:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None
        self._app: TaskkitApp | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def app(self) -> TaskkitApp:
        if self._app is None:
            self._app = create_app(self.settings)
        return self._app


pass_cli = click.make_pass_decorator(CliContext)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")


def emit(data: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else human(data))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in cells]
    return "\n".join(lines)


def parse_json(value: str | None, expected: type, what: str) -> Any:
    """--args / --kwargs: JSON of the expected type, or a usage error (exit 2)."""
    if value is None:
        return expected()
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint=what) from None
    if not isinstance(parsed, expected):
        raise click.BadParameter(f"expected a JSON {'array' if expected is list else 'object'}, got {value}", param_hint=what)
    return parsed
