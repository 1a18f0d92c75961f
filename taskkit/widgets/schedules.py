"""ScheduleEditor: list, add (every / cron with a time zone / one-off), enable, disable, delete, run now, upcoming."""

from __future__ import annotations

from typing import Any

from .. import schedules as api
from ..app import TaskkitApp
from ..errors import TaskkitError
from ..routing import routes
from . import html
from .view import View

KINDS = ("every", "cron", "at")


class ScheduleEditor(View):
    """Every schedule with its next and last run; each button is a method of the same name."""

    def __init__(self, *, app: TaskkitApp | None = None) -> None:
        super().__init__(app=app)
        self.message = ""
        self.refresh()

    def _read(self) -> dict[str, Any]:
        return {"schedules": api.list_schedules(app=self.app), "upcoming": api.upcoming(window="24h", limit=20, app=self.app)}

    # ------------------------------------------------------------ actions (plain methods)

    def _act(self, done: str, call: Any) -> Any:
        try:
            out = call()
        except TaskkitError as exc:
            self.message = ""
            self.error = str(exc)
            if self._widget is not None:
                self._update()
            raise
        self.message = done
        self.refresh()
        return out

    def add(self, name: str, task: str, **spec: Any) -> api.Schedule:
        """taskkit.add_schedule: exactly one of every=, cron= (+ timezone=) or at=; args, kwargs, queue, priority."""
        return self._act(f"added {name}", lambda: api.add_schedule(name, task, app=self.app, **spec))

    def enable(self, name: str) -> api.Schedule:
        return self._act(f"enabled {name}", lambda: api.enable_schedule(name, app=self.app))

    def disable(self, name: str) -> api.Schedule:
        return self._act(f"disabled {name}", lambda: api.disable_schedule(name, app=self.app))

    def delete(self, name: str) -> None:
        return self._act(f"deleted {name}", lambda: api.delete_schedule(name, app=self.app))

    def run_now(self, name: str) -> str:
        return self._act(f"sent {name} now", lambda: api.run_schedule_now(name, app=self.app))

    # ------------------------------------------------------------ faces

    def __repr__(self) -> str:
        if self.data is None:
            return f"<ScheduleEditor: {self.error}>"
        on = sum(s.enabled for s in self.data["schedules"])
        return f"<ScheduleEditor: {len(self.data['schedules'])} schedules, {on} enabled>"

    def _html(self) -> str:
        if self.data is None:
            return html.box("schedules", html.error(self.error or "not read yet"))
        rows = [
            (
                s.name,
                s.describe(),
                s.task,
                "yes" if s.enabled else "no",
                "toml" if s.declared else "runtime",
                html.when(s.next_run_at),
                html.when(s.last_run_at),
                s.total_run_count,
            )
            for s in self.data["schedules"]
        ]
        table = html.table(
            ["name", "schedule", "task", "on", "source", "next run (UTC)", "last run (UTC)", "runs"], rows, empty="no schedules"
        )
        upcoming = html.table(
            ["at (UTC)", "schedule", "task"],
            [(html.when(u.at), u.name, u.task) for u in self.data["upcoming"]],
            empty="nothing in the next 24h",
        )
        parts = [html.section("Schedules", table), html.section("Next 24 hours", upcoming)]
        parts.insert(0, html.error(self.error) if self.error else f"<p>{html.text(self.message)}</p>" if self.message else "")
        return html.box("schedules", *parts)

    def _build(self) -> Any:
        import ipywidgets as w

        self._body = w.HTML()
        self._pick = w.Dropdown(description="schedule")
        buttons = {}
        for label, action in (("Enable", self.enable), ("Disable", self.disable), ("Run now", self.run_now), ("Delete", self.delete)):
            b = buttons[label] = w.Button(description=label, layout=w.Layout(width="auto"))
            b.on_click(lambda _, act=action: self._click(act, self._pick.value))
        self.buttons = buttons
        self._name = w.Text(description="name")
        self._taskname = w.Combobox(options=[d.task for d in routes(app=self.app)], description="task")
        self._kind = w.Dropdown(options=KINDS, value="every", description="kind")
        self._spec = w.Text(placeholder='"15m" · "0 3 * * *" · "2030-10-01T09:00:00+02:00"', description="when")
        self._tz = w.Text(placeholder="Europe/Berlin (cron)", description="timezone")
        self._args = w.Text(value="[]", description="args JSON")
        add = self.buttons["Add"] = w.Button(description="Add", button_style="primary")
        add.on_click(lambda _: self._click(self._add_form))
        form = w.VBox([w.HBox([self._name, self._taskname, self._kind]), w.HBox([self._spec, self._tz, self._args, add])])
        return w.VBox([self._body, w.HBox([self._pick, *(buttons[k] for k in ("Enable", "Disable", "Run now", "Delete"))]), form])

    def _add_form(self) -> None:
        import json

        try:
            args = json.loads(self._args.value or "[]")
        except ValueError:
            args = self._args.value  # add_schedule refuses it with the field named
        spec = {self._kind.value: self._spec.value, "args": args}
        if self._tz.value:
            spec["timezone"] = self._tz.value
        self.add(self._name.value, self._taskname.value, **spec)

    def _update(self) -> None:
        self._body.value = self._html()
        names = [s.name for s in (self.data or {}).get("schedules", [])]
        if list(self._pick.options) != names:
            self._pick.options = names
