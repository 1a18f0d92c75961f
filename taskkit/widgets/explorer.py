"""RunsExplorer: a window of the run history as a DataFrame, with throughput, percentiles and rates."""

from __future__ import annotations

from typing import Any

from .. import history, reports
from ..app import TaskkitApp
from ..kinds import Since
from . import html
from .view import View

WINDOWS = ("15m", "1h", "6h", "24h", "7d")
STATES = ("SUCCESS", "FAILURE", "RETRY", "STARTED", "RECEIVED", "SENT", "REVOKED", "REJECTED", "LOST")
SHOWN = 50  # runs the snapshot and the widget list (the DataFrame holds all of them)
ALL = "(all)"


class RunsExplorer(View):
    """Filters → `taskkit.runs()`; the analysis comes from taskkit.reports (per_task, throughput, slowest)."""

    def __init__(self, *, since: Since = "1h", until: Since = None, task: str | None = None, state: str | None = None,
                 queue: str | None = None, worker: str | None = None, app: TaskkitApp | None = None) -> None:  # fmt: skip
        super().__init__(app=app)
        self.filters: dict[str, Any] = {"since": since, "until": until, "task": task, "state": state, "queue": queue, "worker": worker}
        self.refresh()

    def _read(self) -> Any:
        return history.runs(app=self.app, **{k: v for k, v in self.filters.items() if v is not None or k == "since"})

    def load(self, **filters: Any) -> Any:
        """Change filters (since, until, task, state, queue, worker) and read again; returns the runs DataFrame."""
        unknown = set(filters) - self.filters.keys()
        if unknown:
            raise TypeError(f"unknown filter {sorted(unknown)[0]!r}; filters: {', '.join(self.filters)}")
        self.filters.update(filters)
        self.refresh()
        return self.data

    # ------------------------------------------------------------ the analysis (taskkit.reports)

    def per_task(self) -> Any:
        return reports.per_task(self.data)

    def throughput(self, freq: str = "1min") -> Any:
        return reports.throughput(self.data, freq=freq)

    def slowest(self, n: int = 10) -> Any:
        return reports.slowest(self.data, n)

    def plot(self) -> Any:
        """One matplotlib figure: throughput per minute; failure and retry rates; p50/p95/p99
        runtime and queue wait per task."""
        import matplotlib.pyplot as plt

        fig, ((flow, rates), (runtime, wait)) = plt.subplots(2, 2, figsize=(11, 6.5))
        per_minute = self.throughput()
        if not per_minute.empty:
            per_minute.plot(ax=flow, kind="area" if len(per_minute) > 1 else "bar", stacked=True, linewidth=0)  # one minute: a bar
        flow.set(title="runs finished per minute", xlabel="", ylabel="runs")
        stats = self.per_task().set_index("task")
        panels = ((rates, ["failure_rate", "retry_rate"], "failure and retry rate", "share of runs"),
                  (runtime, ["runtime_p50", "runtime_p95", "runtime_p99"], "runtime per task", "seconds"),
                  (wait, ["wait_p50", "wait_p95", "wait_p99"], "queue wait per task", "seconds"))  # fmt: skip
        for ax, columns, title, unit in panels:
            if not stats.empty:
                stats[columns].plot(ax=ax, kind="barh")
            ax.set(title=title, xlabel=unit, ylabel="")
        fig.tight_layout()
        return fig

    # ------------------------------------------------------------ faces

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.filters.items() if v is not None}
        n = "?" if self.data is None else len(self.data)
        return f"<RunsExplorer {shown}: {n} runs{'; ' + self.error if self.error else ''}>"

    def _html(self) -> str:
        if self.data is None:
            return html.box("runs", html.error(self.error or "not read yet"))
        df = self.data
        stats = self.per_task()
        per_task = html.table(list(stats.columns), stats.itertuples(index=False), empty="no runs in this window")
        recent = df.tail(SHOWN)
        cols = ["id", "task", "state", "queue", "worker", "attempts", "queue_wait", "runtime"]
        runs = html.table(cols, recent[cols].round(3).astype(object).where(recent[cols].notna(), None).itertuples(index=False), cap=SHOWN)
        shown = ", ".join(f"{k}={v}" for k, v in self.filters.items() if v is not None)
        return html.box(
            "runs", html.section("Per task", per_task), html.section(f"Latest {min(len(df), SHOWN)} of {len(df)}", runs), note=shown
        )

    def _build(self) -> Any:
        import ipywidgets as w

        tasks = [ALL, *sorted({str(t) for t in self.data["task"].dropna()})] if self.data is not None else [ALL]
        self._since = w.Dropdown(
            options=WINDOWS, value=self.filters["since"] if self.filters["since"] in WINDOWS else "1h", description="since"
        )
        self._task = w.Combobox(options=tasks[1:], value=self.filters["task"] or "", placeholder="any task", description="task")
        self._state = w.Dropdown(options=[ALL, *STATES], value=self.filters["state"] or ALL, description="state")
        self._queue = w.Dropdown(options=[ALL, *self.app.topology.queues], value=self.filters["queue"] or ALL, description="queue")
        self._worker = w.Text(value=self.filters["worker"] or "", placeholder="any worker", description="worker")
        self.load_button = w.Button(description="Load", icon="search", button_style="primary")
        self.load_button.on_click(lambda _: self._load_form())
        self._body = w.HTML()
        self._plot = w.Output()
        controls = w.VBox([w.HBox([self._since, self._task, self._state]), w.HBox([self._queue, self._worker, self.load_button])])
        return w.VBox([controls, self._body, self._plot])

    def _load_form(self) -> None:
        def pick(value: str) -> str | None:
            return None if value in (ALL, "") else value

        self.load(
            since=self._since.value,
            task=pick(self._task.value),
            state=pick(self._state.value),
            queue=pick(self._queue.value),
            worker=pick(self._worker.value),
        )

    def _update(self) -> None:
        self._body.value = self._html()
        if self.data is not None and not self.data.empty:
            import matplotlib.pyplot as plt
            from IPython.display import display

            self._plot.clear_output(wait=True)
            with self._plot:  # on the kernel's thread: a button click or refresh(), never the refresh task's worker thread
                fig = self.plot()
                display(fig)
                plt.close(fig)
