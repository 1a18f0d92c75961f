"""`taskkit metrics show|serve`: the Prometheus exporter (taskkit.metrics)."""

from __future__ import annotations

import click

from ..kinds import BIND, refuse
from .common import CliContext, pass_cli


@click.group("metrics")
def metrics_group() -> None:
    """Prometheus metrics: queues, task counts and runtimes, workers, beat, Redis."""


@metrics_group.command("show")
@click.option("--per-level", is_flag=True, default=None, help="Also waiting messages per priority level.")
@pass_cli
def show(cli: CliContext, per_level: bool | None) -> None:
    """Print one scrape in Prometheus' text format."""
    from .. import metrics  # here: prometheus_client costs every other command ~60 ms

    click.echo(metrics.exposition(cli.app, per_level=per_level), nl=False)


@metrics_group.command("serve")
@click.option("--bind", help='host:port to listen on (default: [metrics] bind, "127.0.0.1:9808").')
@click.option("--no-auth", is_flag=True, help="Serve without a token (only behind something that authenticates).")
@pass_cli
def serve(cli: CliContext, bind: str | None, no_auth: bool) -> None:
    """Serve /metrics; scrapers send TASKKIT_METRICS_TOKEN as a bearer token (or basic auth)."""
    from .. import metrics

    address = refuse("--bind", bind, BIND) if bind is not None else cli.settings.metrics.bind
    auth = None if no_auth else metrics.Auth.from_settings(cli.app)
    if auth is not None and not auth.configured:
        raise click.ClickException(
            f"no metrics token: set {metrics.TOKEN_ENV} or [metrics] token_file (or {metrics.BASIC_ENV}=user:password); "
            "--no-auth serves without one"
        )
    metrics.serve(address, app=cli.app, auth=auth, ready=lambda url: click.echo(f"serving {url}" + (" (no auth)" if no_auth else "")))


commands = [metrics_group]
