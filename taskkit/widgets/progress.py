"""progress(result): a live bar for one task, a group or a chord (a sweep: points done / total and
a running table of the finished points)."""

from __future__ import annotations

import time
from typing import Any

from ..app import TaskkitApp
from ..errors import WaitTimeout
from ..results import Progress, progress_of
from . import html
from .view import View

POLL = 0.5  # seconds between reads while live


class ProgressView(View):
    """Follows an AsyncResult, GroupResult or chord until it is done."""

    interval = POLL

    def __init__(self, res: Any, *, app: TaskkitApp | None = None) -> None:
        super().__init__(app=app or getattr(res, "app", None))
        self.res = res
        self.refresh()

    def _read(self) -> Progress:
        return progress_of(self.res, app=self.app)

    def _apply(self, data: Progress) -> None:
        super()._apply(data)
        if data.finished:
            self.stop()

    def wait(self, timeout: float = 300.0) -> Progress:
        """Block until done (headless runbooks); raises WaitTimeout."""
        deadline = time.monotonic() + timeout
        while not (self.refresh().data and self.data.finished):
            if time.monotonic() > deadline:
                raise WaitTimeout(self.data.id if self.data else "", timeout)
            time.sleep(POLL)
        return self.data

    def __repr__(self) -> str:
        p: Progress | None = self.data
        if p is None:
            return f"<progress: {self.error}>"
        of = f"/{p.total:g}" if p.total else ""
        return f"<progress {p.id}: {p.state} {p.done:g}{of}{' ' + p.error if p.error else ''}>"

    def _rows_table(self, p: Progress) -> str:
        dicts = [r for r in p.rows if isinstance(r, dict)]
        if not dicts:
            return ""
        headers = list(dict.fromkeys(k for r in dicts for k in r))
        return html.section("Finished", html.table(headers, [[r.get(h) for h in headers] for r in dicts]))

    def _html(self) -> str:
        p: Progress | None = self.data
        if p is None:
            return html.box("progress", html.error(self.error or "not read yet"))
        pct = p.percent if p.percent is not None else (100.0 if p.finished else 0.0)
        bar = (
            f'<div style="width: 300px; border: 1px solid var(--jp-border-color1, #999);">'
            f'<div style="width: {pct:.0f}%; height: 8px; background: var(--jp-brand-color1, #1976d2);"></div></div>'
        )
        of = f" / {p.total:g}" if p.total else ""
        parts = [bar, f"<p>{html.text(p.state)}: {p.done:g}{of}</p>"]
        if p.error:
            parts.append(html.error(p.error))
        elif p.finished and p.result is not None and not p.rows:
            parts.append(f"<p>result: {html.text(p.result)}</p>")
        parts.append(self._rows_table(p))
        return html.box("progress", *parts, note=p.id)

    def _build(self) -> Any:
        import ipywidgets as w

        self._bar = w.FloatProgress(min=0.0, max=1.0, description="0")
        self._body = w.HTML()
        return w.VBox([self._bar, self._body])

    def _update(self) -> None:
        p: Progress | None = self.data
        if p is not None:
            self._bar.max = float(p.total or 1)
            self._bar.value = float(p.done if p.total else (1.0 if p.finished else 0.0))
            self._bar.description = f"{p.done:g}/{p.total:g}" if p.total else p.state
            self._bar.bar_style = "danger" if p.state == "FAILURE" else "success" if p.finished else "info"
        self._body.value = self._html()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(include, exclude)
        if not (self.data and self.data.finished):
            self.start()
        return bundle


def progress(res: Any, *, app: TaskkitApp | None = None) -> ProgressView:
    """A live progress view of an AsyncResult, a group or a chord (taskkit.tasks.science.start_sweep())."""
    return ProgressView(res, app=app)
