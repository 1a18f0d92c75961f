"""`taskkit runbook list|run`, `taskkit lab`: the notebook face from the command line."""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any

import click

from .. import runbooks
from ..config import CONFIG_ENV
from .common import CliContext, pass_cli


@click.group("runbook")
def runbook() -> None:
    """Runbooks: notebooks with parameters, run unattended and kept as a record."""


@runbook.command("list")
@click.option("--dir", "directory", default=runbooks.RUNBOOKS_DIR, show_default=True, help="Where the runbooks are.")
def list_(directory: str) -> None:
    """The runbooks there are."""
    click.echo("\n".join(runbooks.available(directory)) or f"no runbooks in {directory}")


@runbook.command("run")
@click.argument("name")
@click.option("-p", "--parameter", "params", nargs=2, multiple=True, metavar="KEY VALUE", help="A parameter (repeat): -p dry_run false.")
@click.option("--dir", "directory", default=runbooks.RUNBOOKS_DIR, show_default=True, help="Where the runbooks are.")
@click.option("--records", default=runbooks.RECORDS_DIR, show_default=True, help="Where executed copies are kept (by date).")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds one cell may take.")
@pass_cli
def run(cli: CliContext, name: str, params: tuple[tuple[str, str], ...], directory: str, records: str, timeout: float) -> None:
    """Run runbook NAME with papermill; prints the path of the executed copy."""
    _settings_env(cli)  # a bad taskkit.toml fails here, in one line, before a kernel starts
    parameters = {key: runbooks.parse_value(value) for key, value in params}
    click.echo(str(runbooks.run(name, parameters, directory=directory, records=records, timeout=timeout)))


def _settings_env(cli: CliContext) -> dict[str, str]:
    """The kernel (a child process) reads the same taskkit.toml as this command."""
    if cli.settings.source != "defaults":
        os.environ[CONFIG_ENV] = os.path.abspath(cli.settings.source)
    os.environ.setdefault(
        "TASKKIT_DEV_DIR", os.path.abspath(cli.settings.dev.dir)
    )  # kernels run in notebooks/: the local stack's password stays found
    return dict(os.environ)


@click.command("lab")
@click.option("--port", type=int, default=8888, show_default=True, help="Port on 127.0.0.1.")
@click.option("--dir", "directory", default="notebooks", show_default=True, help="The directory JupyterLab opens.")
@click.option("--token", envvar="TASKKIT_LAB_TOKEN", help="Access token (default: a new random one; or $TASKKIT_LAB_TOKEN).")
@pass_cli
def lab(cli: CliContext, port: int, directory: str, token: str | None) -> None:
    """Open JupyterLab on the notebooks, bound to 127.0.0.1 with a token, kernels with this config."""
    env = _settings_env(cli)  # one-line error for a bad config, before the server starts
    token = token or secrets.token_urlsafe(24)
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
            f"--ServerApp.root_dir={os.path.abspath(directory)}", f"--IdentityProvider.token={token}"]  # fmt: skip
    if os.geteuid() == 0:
        argv.append("--allow-root")  # a container or CI runs as root; Jupyter refuses it without this
    click.echo(f"JupyterLab on http://127.0.0.1:{port}/lab?token={token}", err=True)
    # Become the server (exec): Ctrl-C and SIGTERM reach it directly, nothing is left running behind us.
    os.execve(sys.executable, argv, env)


commands: list[Any] = [runbook, lab]
