"""`taskkit health` and `taskkit alerts`: the [alerts] thresholds checked, and what fired when."""

from __future__ import annotations

import time
from typing import Any

import click

from .. import alerts, status
from .common import CliContext, emit, json_option, pass_cli, table


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _health(h: dict[str, Any]) -> str:
    lines = [f"redis: {h['redis_latency_ms']:.1f} ms; workers: {h['workers']}; waiting: {h['backlog_total']:,}"]
    lines += [f"FIRING  {a['message']}" for a in h["alerts"]] or ["no alert firing"]
    lines += [f"resolved  {t['message']}" for t in h["resolved"]]
    return "\n".join(lines)


@click.command("health")
@json_option
@pass_cli
def health(cli: CliContext, as_json: bool) -> None:
    """Redis, workers and backlog, with the [alerts] thresholds checked (a transition is recorded once)."""
    emit(status.health(app=cli.app), as_json, _health)


def _alerts(data: dict[str, Any]) -> str:
    firing = table(
        [(_when(a["since"]), a["rule"], a["subject"], a["message"]) for a in data["active"]], ["since", "rule", "subject", "message"]
    )
    recent = table([(_when(t["at"]), t["state"], t["rule"], t["subject"]) for t in data["recent"]], ["at", "state", "rule", "subject"])
    return ("active:\n" + firing if data["active"] else "no alert active") + "\n\nrecent:\n" + (recent if data["recent"] else "none")


@click.command("alerts")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Recent transitions to show.")
@json_option
@pass_cli
def alerts_command(cli: CliContext, limit: int, as_json: bool) -> None:
    """Alerts active now (as the last health check left them) and recent transitions."""
    emit({"active": alerts.active(app=cli.app), "recent": alerts.recent(limit=limit, app=cli.app)}, as_json, _alerts)


commands = [health, alerts_command]
