"""What every CLI command shares: settings and app loading, shared options and param types, --json, tables.

Options pass values through as typed; the package checks them and its error becomes the
one-line message (taskkit.cli.TaskkitGroup), so a value is refused in one wording only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from ..app import TaskkitApp, create_app
from ..config import Settings, load_settings
from ..control import CONTROL_TIMEOUT
from ..errors import NoReply

CELL = 60  # characters of args/kwargs shown in a table cell


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


class JsonParam(click.ParamType):
    """A JSON array (--args) or object (--kwargs); anything else is a usage error (exit 2)."""

    def __init__(self, expected: type) -> None:
        self.expected = expected
        self.name = "JSON"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            self.fail(f"not valid JSON ({exc})", param, ctx)
        if not isinstance(parsed, self.expected):
            self.fail(f"expected a JSON {'array' if self.expected is list else 'object'}, got {value}", param, ctx)
        return parsed


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
args_option = click.option("--args", type=JsonParam(list), metavar="JSON", help="Positional arguments as a JSON array.")
kwargs_option = click.option("--kwargs", type=JsonParam(dict), metavar="JSON", help="Keyword arguments as a JSON object.")
queue_option = click.option("--queue", help="Queue to send to (default: from the routes).")
priority_option = click.option("--priority", type=int, help="0 (highest) to 9 (default: from the routes, else the queue's).")
destination_option = click.option(
    "-d",
    "--destination",
    multiple=True,
    metavar="WORKER",
    help="Only these workers (repeat or comma-separate; e.g. w1@host). Default: all.",
)
timeout_option = click.option(
    "--timeout", type=float, default=CONTROL_TIMEOUT, show_default=True, help="Seconds to wait for workers' replies."
)


def emit(data: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else human(data))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in cells]
    return "\n".join(lines)


def cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= CELL else text[: CELL - 1] + "…"


def replies_table(out: dict[str, Any]) -> str:
    rows = [(w, r.get("ok", r.get("error", r)) if isinstance(r, dict) else r) for w, r in sorted(out["replies"].items())]
    return table(rows, ["worker", "reply"])


def check_answers(out: dict[str, Any], timeout: float) -> None:
    """After printing: NoReply (one line, exit 1) if a worker did not answer or answered an error."""
    problems = [f"no reply from {', '.join(out['missing'])} within {timeout:g}s"] if out["missing"] else []
    problems += [f"{worker}: {error}" for worker, error in sorted(out["errors"].items())]
    if not out["replies"] and not out["missing"]:
        problems.append(f"no worker answered within {timeout:g}s; is one running? (`taskkit dev status`)")
    if problems:
        raise NoReply(problems)
