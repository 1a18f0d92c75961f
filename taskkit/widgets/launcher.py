"""TaskLauncher: pick a task, fill a form generated from its signature, submit, follow its progress."""

from __future__ import annotations

import enum
import inspect
import json
import typing
from dataclasses import dataclass
from typing import Any

from celery.result import AsyncResult

from ..app import TaskkitApp
from ..client import submit
from ..errors import InvalidArguments, TaskkitError
from ..kinds import PRIORITIES
from ..routing import routes
from . import html
from .progress import ProgressView
from .view import View

ROUTED = "(from routes)"
SIMPLE = (bool, int, float, str)


@dataclass(frozen=True)
class Field:
    """One parameter of a task, as the form shows it."""

    name: str
    kind: Any  # bool, int, float, str, an Enum class, a tuple of Literal choices, or "json"
    default: Any  # inspect.Parameter.empty when required
    keyword_only: bool

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def fields_of(task: Any) -> list[Field]:
    """The form's fields from the task's signature and type hints."""
    signature = inspect.signature(task.run)
    try:
        hints = typing.get_type_hints(inspect.unwrap(task.run))
    except Exception:  # unresolvable string annotations: every field falls back to JSON
        hints = {}
    out = []
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        hint = hints.get(p.name, p.annotation)
        if typing.get_origin(hint) is typing.Union:  # Optional[int] and friends: the non-None part
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = args[0] if len(args) == 1 else hint
        if typing.get_origin(hint) is typing.Literal:
            kind: Any = tuple(typing.get_args(hint))
        elif isinstance(hint, type) and issubclass(hint, enum.Enum):
            kind = hint
        elif hint in SIMPLE:
            kind = hint
        elif hint is inspect.Parameter.empty and p.default is not p.empty and type(p.default) in SIMPLE:
            kind = type(p.default)
        else:
            kind = "json"
        out.append(Field(p.name, kind, p.default, p.kind is p.KEYWORD_ONLY))
    return out


class TaskLauncher(View):
    """A form for any registered task; every button is also a method (`submit`, `choose`)."""

    def __init__(self, task: str | None = None, *, app: TaskkitApp | None = None) -> None:
        super().__init__(app=app)
        self.tasks = [d.task for d in routes(app=self.app)]
        self.task = task or self.tasks[0]
        self.last: AsyncResult | None = None
        self.follow: ProgressView | None = None
        self.inputs: dict[str, Any] = {}  # parameter -> its input widget (once the widget is built)
        self.choose(self.task)

    def _read(self) -> list[Field]:
        return fields_of(self.app.task_named(self.task))

    def choose(self, task: str) -> TaskLauncher:
        """Switch the form to `task` (UnknownTask for a typo)."""
        self.app.task_named(task)
        self.task = task
        self.refresh()
        if self._widget is not None:
            self._picker.value = task
        return self

    # ------------------------------------------------------------ submitting

    def submit(self, *, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None, queue: str | None = None,
               priority: int | None = None, countdown: float | None = None) -> AsyncResult:  # fmt: skip
        """Queue the task with these arguments (default: the form's), checked like taskkit.submit."""
        if args is None and kwargs is None:
            args, kwargs = self.form_call()
        self.error = None
        try:
            self.last = submit(self.task, args=args or [], kwargs=kwargs, queue=queue, priority=priority, countdown=countdown, app=self.app)
        except TaskkitError as exc:
            self.error = str(exc)
            if self._widget is not None:
                self._update()
            raise
        self.follow = ProgressView(self.last, app=self.app)
        if self._widget is not None:
            self._follow_box.children = (self.follow.widget,)
            self.follow.start()
            self._update()
        return self.last

    def form_call(self) -> tuple[list[Any], dict[str, Any]]:
        """The (args, kwargs) the form holds now; InvalidArguments for a field it cannot read."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        skipped = False  # after a positional left to its default, the rest go by name
        for f in self.data or []:
            raw = self.inputs[f.name].value if f.name in self.inputs else None
            if raw is None or raw == "":
                if f.required:
                    raise InvalidArguments(self.task, f"{f.name} is required")
                skipped = True  # left empty: the task's default
                continue
            value = self._value(f, raw)
            if f.keyword_only or skipped:
                kwargs[f.name] = value
            else:
                args.append(value)
        return args, kwargs

    def _value(self, f: Field, raw: Any) -> Any:
        if f.kind == "json":
            try:
                return json.loads(raw)
            except ValueError as exc:
                raise InvalidArguments(self.task, f"{f.name}: not valid JSON ({exc})") from None
        if isinstance(f.kind, type) and issubclass(f.kind, enum.Enum):
            return f.kind[raw].value
        if f.kind in (int, float) and isinstance(raw, str):  # a required number starts as an empty text field
            try:
                return f.kind(raw)
            except ValueError:
                raise InvalidArguments(
                    self.task, f"{f.name}={raw!r}: expected {'a whole number' if f.kind is int else 'a number'}"
                ) from None
        return raw

    # ------------------------------------------------------------ faces

    def __repr__(self) -> str:
        fields = ", ".join(f.name + ("" if f.required else "=…") for f in self.data or [])
        sent = f"; last sent {self.last.id}" if self.last is not None else ""
        return f"<TaskLauncher {self.task}({fields}){sent}>"

    def _html(self) -> str:
        rows = [(f.name, getattr(f.kind, "__name__", f.kind), "required" if f.required else repr(f.default)) for f in self.data or []]
        parts = [html.table(["parameter", "kind", "default"], rows, empty="no parameters")]
        if self.error:
            parts.append(html.error(self.error))
        if self.follow is not None:
            parts.append(self.follow._html())
        return html.box(f"launch {self.task}", *parts)

    def _input(self, f: Field) -> Any:
        import ipywidgets as w

        default = None if f.required else f.default
        if f.kind is bool:
            return w.Checkbox(value=bool(default), description=f.name)
        if isinstance(f.kind, tuple):
            return w.Dropdown(options=list(f.kind), value=default if default in f.kind else f.kind[0], description=f.name)
        if isinstance(f.kind, type) and issubclass(f.kind, enum.Enum):
            names = [m.name for m in f.kind]
            return w.Dropdown(options=names, value=default.name if isinstance(default, f.kind) else names[0], description=f.name)
        if f.kind is int:
            return (
                w.IntText(value=default, description=f.name)
                if default is not None
                else w.Text(placeholder="int, required", description=f.name)
            )
        if f.kind is float:
            return (
                w.FloatText(value=default, description=f.name)
                if default is not None
                else w.Text(placeholder="number, required", description=f.name)
            )
        if f.kind is str:
            return w.Text(value=default or "", placeholder="" if default is not None else "required", description=f.name)
        return w.Textarea(value="" if f.required else json.dumps(default), placeholder="JSON", description=f.name)

    def _build(self) -> Any:
        import ipywidgets as w

        self._picker = w.Dropdown(options=self.tasks, value=self.task, description="task")
        self._picker.observe(lambda change: self.choose(change["new"]) if change["new"] != self.task else None, names="value")
        self._form = w.VBox()
        self._queue = w.Dropdown(options=[ROUTED, *self.app.topology.queues], value=ROUTED, description="queue")
        self._priority = w.Dropdown(options=[ROUTED, *PRIORITIES], value=ROUTED, description="priority")
        self._countdown = w.FloatText(value=0.0, description="countdown s")
        button = self.submit_button = w.Button(description="Submit", button_style="primary", icon="play")
        button.on_click(lambda _: self._submit_form())
        self._message = w.HTML()
        self._follow_box = w.VBox()
        return w.VBox(
            [self._picker, self._form, w.HBox([self._queue, self._priority, self._countdown]), button, self._message, self._follow_box]
        )

    def _submit_form(self) -> None:
        try:
            args, kwargs = self.form_call()
            queue = None if self._queue.value == ROUTED else self._queue.value
            priority = None if self._priority.value == ROUTED else self._priority.value
            self.submit(args=args, kwargs=kwargs, queue=queue, priority=priority, countdown=self._countdown.value or None)
        except TaskkitError as exc:  # shown in place; nothing was queued
            self.error = str(exc)
            self._update()

    def _update(self) -> None:
        fields = self.data or []
        if fields != getattr(self, "_form_fields", None):  # another task (or another signature): a new form
            self._form_fields = fields
            self.inputs = {f.name: self._input(f) for f in fields}
            self._form.children = tuple(self.inputs.values())
        sent = f"<p>sent {html.text(self.last.id)}</p>" if self.last is not None and not self.error else ""
        self._message.value = html.error(self.error) if self.error else sent
