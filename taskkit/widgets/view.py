"""What every widget shares: three faces over plain data, and a live refresh on the kernel's loop.

A view is plain data (what it last read) with
- `__repr__`: cheap, no I/O;
- `_repr_html_()`: a snapshot of that data (taskkit.widgets.html);
- `.widget`: the live ipywidget, built on first use.
Displaying a view sends all three (`_repr_mimebundle_`), so it reads with no frontend, in
nbval and papermill output and on GitHub, and is live in JupyterLab.

Live refresh is an asyncio task on the kernel's running loop (`start()` / `stop()`): the
blocking read runs in a worker thread, its result is applied to the widget back on the
loop, and nothing ever calls `display()` from a thread. Without a running loop (a plain
script, pytest) `start()` reads once and says so; `refresh()` always works.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..app import TaskkitApp, get_app
from ..errors import TaskkitError

log = logging.getLogger(__name__)


class View:
    """Base of the widgets: subclasses implement `_read()` (I/O), `_apply(data)`, `_html()` and `_build()`."""

    interval: float = 5.0  # seconds between live refreshes

    def __init__(self, *, app: TaskkitApp | None = None) -> None:
        self.app = app or get_app()
        self.data: Any = None  # what the last refresh read
        self.error: str | None = None  # the last refresh's failure, one line
        self._widget: Any = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ data

    def _read(self) -> Any:
        raise NotImplementedError

    def _apply(self, data: Any) -> None:
        """Keep what was read and show it in the widget (on the loop's thread)."""
        self.data, self.error = data, None
        if self._widget is not None:
            self._update()

    def _fail(self, exc: TaskkitError) -> None:
        self.error = str(exc)
        if self._widget is not None:
            self._update()

    def _click(self, action: Any, *args: Any) -> None:
        """A button's action: a refusal is shown in place (and kept as `error`), never raised into the frontend."""
        try:
            action(*args)
        except (TaskkitError, ValueError) as exc:
            self.error = str(exc)
            if self._widget is not None:
                self._update()

    def refresh(self) -> Any:
        """Read now (blocking) and show it; a TaskkitError is kept as `error` and shown, not raised."""
        try:
            self._apply(self._read())
        except TaskkitError as exc:
            self._fail(exc)
        return self

    # ------------------------------------------------------------ live

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, interval: float | None = None) -> bool:
        """Refresh every `interval` seconds on the running event loop; False (after one read) when there is none."""
        if interval is not None:
            self.interval = interval
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.refresh()
            return False
        if not self.running:
            self._task = loop.create_task(self._live())
        return True

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _live(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.run_in_executor(None, self._read)  # blocking I/O off the loop
            except TaskkitError as exc:
                self._fail(exc)
            except Exception:  # a bug must not kill the refresh silently, nor spam every tick
                log.exception("taskkit: %s refresh failed", type(self).__name__)
                self.error = "refresh failed; see the kernel log"
            else:
                self._apply(data)
            await asyncio.sleep(self.interval)

    # ------------------------------------------------------------ faces

    @property
    def widget(self) -> Any:
        """The live ipywidget (built once)."""
        if self._widget is None:
            self._widget = self._build()
            self._update()
        return self._widget

    def _build(self) -> Any:
        raise NotImplementedError

    def _update(self) -> None:
        raise NotImplementedError

    def _html(self) -> str:
        raise NotImplementedError

    def _repr_html_(self) -> str:
        return self._html()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_() or {})
        bundle.update({"text/plain": repr(self), "text/html": self._html()})
        return bundle
