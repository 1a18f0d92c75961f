"""Notebook views over the taskkit API (the `notebook` extra: ipywidgets, matplotlib).

    import taskkit.widgets as tw
    tw.connect()              # one line: which Redis, from where; one-line errors from here on
    tw.ClusterView()          # workers, queues, schedules, dead letters, Redis: kept current
    tw.TaskLauncher()         # a form from a task's signature; submit; live progress
    tw.progress(result)       # a live bar for a task, a group or a chord
    tw.RunsExplorer()         # the run history as a DataFrame, with plots
    tw.ScheduleEditor()       # add, enable, disable, delete, run now
    tw.DeadLetterBrowser()    # inspect, replay, drop (with a confirmation step)

Each is plain data with a cheap repr, an HTML snapshot and a live widget; each button is
also a method, so a runbook does the same headless under papermill.
"""

from __future__ import annotations

import os
from typing import Any

from ..app import TaskkitApp, get_app
from ..broker import check_reachable
from ..config import CONFIG_ENV, mask_url
from ..errors import TaskkitError
from .cluster import ClusterView
from .deadletters import DeadLetterBrowser
from .explorer import RunsExplorer
from .launcher import TaskLauncher
from .progress import ProgressView, progress
from .schedules import ScheduleEditor

__all__ = ["ClusterView", "DeadLetterBrowser", "ProgressView", "RunsExplorer", "ScheduleEditor", "TaskLauncher", "connect", "progress"]


def connect(*, quiet: bool = False, app: TaskkitApp | None = None) -> None:
    """Say in one line which Redis the notebook talks to and where that came from; check it answers.

    In IPython, a TaskkitError from any later cell then shows as its one-line message instead
    of a traceback (the cell still fails, so papermill and nbval still stop on it).
    """
    _one_line_errors()
    app = app or get_app()
    s = app.settings
    url = mask_url(s.broker_url)
    if s.broker.url:
        where = "TASKKIT_BROKER_URL" if os.environ.get("TASKKIT_BROKER_URL") else s.source  # the environment overrides the file
        line = f"taskkit: {url} (from {where})"
    else:
        line = f"taskkit: the local stack at {url} (nothing configured: no {CONFIG_ENV}, taskkit.toml or TASKKIT_BROKER_URL)"
    check_reachable(app)  # BrokerUnavailable here, in the first cell that needs Redis
    if not quiet:
        print(line)  # printed, not returned: a returned line would show twice in a notebook


def _one_line_errors() -> None:
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def handler(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> list[str]:
        stb = [f"\x1b[0;31m{etype.__name__}\x1b[0m: {value}"]
        shell._showtraceback(etype, value, stb)
        return stb

    shell.set_custom_exc((TaskkitError,), handler)
