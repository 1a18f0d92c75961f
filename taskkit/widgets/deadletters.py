"""DeadLetterBrowser: filter dead letters, inspect one, replay (to its queue or another, with edited
args) or drop, each after a confirmation step."""

from __future__ import annotations

from typing import Any

from .. import deadletters as api
from ..app import TaskkitApp
from ..errors import TaskkitError
from ..kinds import Since
from . import html
from .view import View


class DeadLetterBrowser(View):
    """`taskkit.deadletters` with filters; replay and drop are methods too (runbooks call them)."""

    def __init__(self, *, queue: str | None = None, task: str | None = None, exc_type: str | None = None, since: Since = None,
                 app: TaskkitApp | None = None) -> None:  # fmt: skip
        super().__init__(app=app)
        self.filters: dict[str, Any] = {"queue": queue, "task": task, "exc_type": exc_type, "since": since}
        self.selected: dict[str, Any] | None = None
        self.pending: tuple[str, dict[str, Any]] | None = None  # an action waiting for confirm()
        self.message = ""
        self.refresh()

    def _read(self) -> list[dict[str, Any]]:
        return api.entries(app=self.app, **self.filters)

    def filter(self, **filters: Any) -> list[dict[str, Any]]:
        """Change filters (queue, task, exc_type, since) and read again."""
        self.filters.update(filters)
        self.refresh()
        return self.data

    def inspect(self, task_id: str) -> dict[str, Any]:
        """One dead letter in full: message, exception, traceback, replay state."""
        self.selected = api.get(task_id, app=self.app)
        if self._widget is not None:
            self._update()
        return self.selected

    # ------------------------------------------------------------ actions: ask, then confirm

    def ask_replay(self, task_ids: list[str] | str, *, queue: str | None = None, args: list[Any] | None = None,
                   kwargs: dict[str, Any] | None = None) -> str:  # fmt: skip
        """Stage a replay; `confirm()` sends it. Returns what it would do."""
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        self.pending = ("replay", {"task_ids": ids, "queue": queue, "args": args, "kwargs": kwargs})
        where = f" to {queue}" if queue else " to their queues"
        edited = " with edited arguments" if args is not None or kwargs is not None else ""
        return self._say(f"replay {len(ids)} dead letter(s){where}{edited}? confirm() to send")

    def ask_drop(self, task_ids: list[str] | str) -> str:
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        self.pending = ("drop", {"task_ids": ids})
        return self._say(f"drop {len(ids)} dead letter(s)? confirm() to delete them")

    def confirm(self) -> Any:
        """Carry out the staged action (checked first: nothing changes on bad input)."""
        if self.pending is None:
            return self._say("nothing to confirm")
        action, options = self.pending
        self.pending = None
        try:
            out = api.replay(app=self.app, **options) if action == "replay" else api.drop(options["task_ids"], app=self.app)
        except TaskkitError as exc:
            self.error = str(exc)
            if self._widget is not None:
                self._update()
            raise
        self.refresh()
        self._say(f"replayed {len(out)}" if action == "replay" else f"dropped {out}")
        return out

    def cancel(self) -> str:
        self.pending = None
        return self._say("cancelled")

    def replay(self, task_ids: list[str] | str, **options: Any) -> list[dict[str, Any]]:
        """Ask and confirm in one call (headless runbooks)."""
        self.ask_replay(task_ids, **options)
        return self.confirm()

    def drop(self, task_ids: list[str] | str) -> int:
        self.ask_drop(task_ids)
        return self.confirm()

    def _say(self, message: str) -> str:
        self.message, self.error = message, None
        if self._widget is not None:
            self._update()
        return message

    # ------------------------------------------------------------ faces

    def __repr__(self) -> str:
        n = "?" if self.data is None else len(self.data)
        shown = {k: v for k, v in self.filters.items() if v is not None}
        return f"<DeadLetterBrowser {shown}: {n} dead letters{'; ' + self.error if self.error else ''}>"

    def _html(self) -> str:
        if self.data is None:
            return html.box("dead letters", html.error(self.error or "not read yet"))
        rows = [(e["id"], e["task"], e["queue"], e["exc_type"], e.get("attempts"), "yes" if e["replayed"] else "") for e in self.data]
        parts = [html.table(["id", "task", "queue", "exception", "attempts", "replayed"], rows, empty="no dead letters")]
        if self.selected is not None:
            e = self.selected
            detail = html.table(["field", "value"], [(k, e.get(k)) for k in ("id", "task", "queue", "attempts", "worker")])
            message = html.pre(f"{e.get('exc_type')}: {e.get('exc_message')}\nargs: {e.get('args')}\nkwargs: {e.get('kwargs')}")
            parts.append(html.section("Selected", detail + message + html.pre(e.get("traceback", ""))))
        parts.insert(0, html.error(self.error) if self.error else f"<p>{html.text(self.message)}</p>" if self.message else "")
        return html.box("dead letters", *parts, note=", ".join(f"{k}={v}" for k, v in self.filters.items() if v is not None))

    def _build(self) -> Any:
        import ipywidgets as w

        self._body = w.HTML()
        self._pick = w.Dropdown(description="dead letter")
        self._pick.observe(lambda c: self.inspect(c["new"]) if c["new"] else None, names="value")
        self._queue = w.Dropdown(options=["(its own)", *self.app.topology.queues], description="replay to")
        self._args = w.Text(placeholder="edited args JSON (optional)", description="args")
        self.buttons = {name: w.Button(description=name, layout=w.Layout(width="auto")) for name in ("Replay", "Drop", "Confirm", "Cancel")}
        self.buttons["Replay"].on_click(lambda _: self._click(self._ask_replay_form))
        self.buttons["Drop"].on_click(lambda _: self._click(lambda: self.ask_drop(self._pick.value)))
        self.buttons["Confirm"].on_click(lambda _: self._click(self.confirm))
        self.buttons["Cancel"].on_click(lambda _: self.cancel())
        return w.VBox([self._body, w.HBox([self._pick, self._queue, self._args]), w.HBox(list(self.buttons.values()))])

    def _ask_replay_form(self) -> None:
        import json

        queue = None if self._queue.value == "(its own)" else self._queue.value
        args = json.loads(self._args.value) if self._args.value else None
        self.ask_replay(self._pick.value, queue=queue, args=args)

    def _update(self) -> None:
        self._body.value = self._html()
        ids = [e["id"] for e in self.data or []]
        if list(self._pick.options) != ids:
            self._pick.options = ids
