"""Schedules, the API: list, read, add, change, enable/disable, delete and fire them now.

Schedules are declared in taskkit.toml or added at run time; each is checked like a submit
when it is stored (`check_sendable`), not when it fires. What a schedule is lives in
`taskkit.schedule_spec`, how Redis keeps it in `taskkit.schedule_store`, and the beat
scheduler that sends them is `taskkit.beat.Scheduler`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import BaseSchedule, crontab
from redbeat.schedules import rrule

from . import schedule_store as store
from .app import TaskkitApp, get_app
from .broker import redbeat_client
from .errors import InvalidArguments, InvalidOption, ScheduleError, UnknownQueue, UnknownSchedule
from .keys import RedBeatKeys, redbeat_keys
from .kinds import COUNT, DURATION, POSITIVE, refuse
from .schedule_spec import KINDS, ScheduleSpec, cron_text, parse_spec
from .schedule_store import HEADER_SCHEDULE

NEXT_RUNS = 5  # fire times `show` lists by default
SUGGEST_FROM = 10_000  # names an unknown-schedule error looks through for "did you mean"


# ---------------------------------------------------------------- plain data


@dataclass(frozen=True)
class Schedule:
    """One schedule as stored, with its run record. Times are aware datetimes in UTC."""

    name: str
    task: str
    kind: str  # "every", "cron" or "at"
    spec: str  # "15m" · "0 3 * * *" · "2030-10-01T07:00:00+00:00"
    timezone: str | None
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str | None
    priority: int | None
    enabled: bool
    declared: bool  # from taskkit.toml: change it there
    next_run_at: datetime | None  # None: disabled or finished; in the past: overdue, sent at the next tick
    last_run_at: datetime | None
    total_run_count: int

    def describe(self) -> str:
        return f"{self.kind} {self.spec}" + (f" {self.timezone}" if self.timezone else "")


@dataclass(frozen=True)
class Upcoming:
    at: datetime
    name: str
    task: str


def _duration_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _kind(sched: BaseSchedule) -> tuple[str, str, str | None]:
    if isinstance(sched, rrule):
        return "at", sched.dtstart.astimezone(UTC).isoformat(), None
    if isinstance(sched, crontab):
        return "cron", cron_text(sched), getattr(sched, "timezone", None) or str(sched.tz)
    return "every", _duration_text(sched.run_every.total_seconds()), None


def _schedule(app: Any, name: str, definition: str, meta: str | None, score: float | None, declared: bool) -> Schedule:
    d = store.decode_definition(definition, app)
    kind, spec, tz = _kind(d["schedule"])
    m = store.decode_meta(meta)
    last = m["last_run_at"]
    options = d.get("options") or {}
    return Schedule(
        name=name,
        task=d["task"],
        kind=kind,
        spec=spec,
        timezone=tz,
        args=list(d.get("args") or ()),
        kwargs=dict(d.get("kwargs") or {}),
        queue=options.get("queue"),
        priority=options.get("priority"),
        enabled=d["enabled"],
        declared=declared,
        next_run_at=store.utc(score),
        last_run_at=last.astimezone(UTC) if last else None,
        total_run_count=m["total_run_count"],
    )


# ---------------------------------------------------------------- the API


def list_schedules(*, limit: int | None = None, app: TaskkitApp | None = None) -> list[Schedule]:
    """Every schedule: scheduled ones by next run, then disabled and finished ones."""
    app = app or get_app()
    if limit is not None:
        refuse("limit", limit, POSITIVE)
    k = redbeat_keys(app)
    with redbeat_client(app) as r:
        rows = r.zrangebyscore(k.schedule, 0, "+inf", start=0, num=limit if limit is not None else -1, withscores=True)
        if limit is None or len(rows) < limit:
            rest = r.zrangebyscore(k.schedule, "-inf", "(0", start=0, num=limit - len(rows) if limit is not None else -1, withscores=True)
            rows += sorted(rest)
        with r.pipeline(transaction=False) as pipe:
            pipe.smembers(k.statics)
            for key, _ in rows:
                pipe.hmget(key, "definition", "meta")
            statics, *stored = pipe.execute()
    out = []
    for (key, score), (definition, meta) in zip(rows, stored, strict=True):
        if definition is not None:  # gone since the first read
            name = k.name(key)
            out.append(_schedule(app, name, definition, meta, score, name in statics))
    return out


def get_schedule(name: str, *, app: TaskkitApp | None = None) -> Schedule:
    """One schedule with its last run, run count and next run; raises UnknownSchedule."""
    app = app or get_app()
    definition, meta, score, declared = _read(app, name)
    return _schedule(app, name, definition, meta, score, declared)


def _read(app: TaskkitApp, name: str) -> tuple[str, str | None, float | None, bool]:
    k = redbeat_keys(app)
    with redbeat_client(app) as r, r.pipeline(transaction=False) as pipe:
        pipe.hmget(k.entry(name), "definition", "meta")
        pipe.zscore(k.schedule, k.entry(name))
        pipe.sismember(k.statics, name)
        (definition, meta), score, declared = pipe.execute()
        if definition is None:
            raise _unknown(name, r, k)
    return definition, meta, score, bool(declared)


def next_runs(name: str, *, count: int = NEXT_RUNS, app: TaskkitApp | None = None) -> list[datetime]:
    """The next `count` fire times of a schedule (a cron's in its own zone, others in UTC)."""
    app = app or get_app()
    refuse("count", count, COUNT)
    definition, _meta_text, score, _ = _read(app, name)
    sched = store.decode_definition(definition, app)["schedule"]
    if score is None or score < 0:
        return []
    times = store.fire_times(sched, score, datetime.now(UTC), datetime.max.replace(tzinfo=UTC) - timedelta(days=1), count)
    tz = getattr(sched, "timezone", None)
    return [t.astimezone(ZoneInfo(tz)) if tz else t.astimezone(UTC) for t in times]


def upcoming(*, window: float | str = 86400.0, limit: int | None = None, app: TaskkitApp | None = None) -> list[Upcoming]:
    """Every fire time of every enabled schedule within `window` (seconds or "24h") from now.

    Only schedules whose next due time falls in the window are read: the due-time sorted
    set answers that, so the cost follows the answer, not the number of schedules.
    """
    app = app or get_app()
    if limit is not None:
        refuse("limit", limit, POSITIVE)
    seconds = refuse("window", window, DURATION)
    k = redbeat_keys(app)
    now = datetime.now(UTC)
    until = now + timedelta(seconds=seconds)
    with redbeat_client(app) as r:
        rows = r.zrangebyscore(k.schedule, 0, until.timestamp(), withscores=True)
        with r.pipeline(transaction=False) as pipe:
            for key, _ in rows:
                pipe.hget(key, "definition")
            definitions = pipe.execute()
    out = []
    for (key, score), definition in zip(rows, definitions, strict=True):
        if definition is None:
            continue
        d = store.decode_definition(definition, app)
        times = store.fire_times(d["schedule"], score, now, until, limit if limit is not None else math.inf)
        out += [Upcoming(t, k.name(key), d["task"]) for t in times]
    out.sort(key=lambda u: (u.at, u.name))
    return out[:limit] if limit is not None else out


def add_schedule(
    name: str,
    task: str,
    *,
    every: float | str | None = None,
    cron: str | None = None,
    timezone: str | None = None,
    at: datetime | str | None = None,
    args: list[Any] | tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    enabled: bool = True,
    app: TaskkitApp | None = None,
) -> Schedule:
    """Add a runtime schedule. Everything is checked first; on any error nothing is stored.

    Exactly one of `every` ("15m", seconds), `cron` (with an IANA `timezone`) or `at` (an
    aware time in the future: a one-off). Raises ScheduleError, UnknownTask or BrokerUnavailable.
    An interval first fires one interval from now; beat picks it up within one tick.
    """
    app = app or get_app()
    raw = {"task": task, "every": every, "cron": cron, "timezone": timezone, "at": at, "args": args, "kwargs": kwargs}
    raw |= {"queue": queue, "priority": priority, "enabled": enabled}
    spec = parse_spec(name, {k: v for k, v in raw.items() if v is not None})
    check_sendable(app, name, spec)
    k = redbeat_keys(app)
    sched = spec.celery_schedule(app)
    definition = store.definition(name, spec.task, sched, spec.args, spec.kwargs, spec.options(), spec.enabled)
    score = store.due_score(store.next_after(sched, datetime.now(UTC))) if spec.enabled else -1.0

    def write(pipe: Any) -> None:
        _refuse_declared(app, name, pipe)
        if pipe.exists(k.entry(name)):
            raise ScheduleError(name, "name", name, "a name not in use (`taskkit schedules update` changes a schedule)")
        pipe.multi()
        pipe.hset(k.entry(name), mapping={"definition": definition, "meta": store.meta(None, 0)})
        pipe.zadd(k.schedule, {k.entry(name): score})

    with redbeat_client(app) as r:
        r.transaction(write, k.entry(name), k.statics)
    return get_schedule(name, app=app)


def update_schedule(
    name: str,
    *,
    task: str | None = None,
    every: float | str | None = None,
    cron: str | None = None,
    timezone: str | None = None,
    at: datetime | str | None = None,
    args: list[Any] | tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    app: TaskkitApp | None = None,
) -> Schedule:
    """Change a runtime schedule; what is not given stays. Beat applies it within one tick.

    A new every/cron/at replaces the old timing: the next run is recomputed (an interval
    stays on the grid of its last run). The last run and run count stay.
    """
    app = app or get_app()
    k = redbeat_keys(app)
    given = {"task": task, "every": every, "cron": cron, "timezone": timezone, "at": at, "args": args, "kwargs": kwargs}
    changes = {key: v for key, v in {**given, "queue": queue, "priority": priority}.items() if v is not None}
    retime = bool(changes.keys() & {*KINDS, "timezone"})

    def write(pipe: Any) -> None:
        _refuse_declared(app, name, pipe)
        definition, meta = pipe.hmget(k.entry(name), "definition", "meta")
        if definition is None:
            raise _unknown(name, pipe, k)
        old = _schedule(app, name, definition, meta, None, False)
        raw = _as_input(old, store.decode_definition(definition, app)["schedule"])
        if changes.keys() & set(KINDS):  # new timing: a cron keeps its zone unless given one
            keep_zone = "cron" in changes and old.kind == "cron"
            raw = {key: v for key, v in raw.items() if key not in KINDS and (key != "timezone" or keep_zone)}
        spec = parse_spec(name, raw | changes, past_ok="at" not in changes)
        check_sendable(app, name, spec)
        sched = spec.celery_schedule(app)
        pipe.multi()
        pipe.hset(
            k.entry(name), "definition", store.definition(name, spec.task, sched, spec.args, spec.kwargs, spec.options(), spec.enabled)
        )
        if retime and spec.enabled:
            pipe.zadd(k.schedule, {k.entry(name): store.due_score(store.next_after(sched, datetime.now(UTC), anchor=old.last_run_at))})

    with redbeat_client(app) as r:
        r.transaction(write, k.entry(name), k.statics)
    return get_schedule(name, app=app)


def enable_schedule(name: str, *, app: TaskkitApp | None = None) -> Schedule:
    """Resume sending: the next run is the schedule's next regular time (no catch-up burst)."""
    return _set_enabled(name, True, app or get_app())


def disable_schedule(name: str, *, app: TaskkitApp | None = None) -> Schedule:
    """Stop sending until enabled again; the schedule, last run and count stay."""
    return _set_enabled(name, False, app or get_app())


def _set_enabled(name: str, enabled: bool, app: TaskkitApp) -> Schedule:
    k = redbeat_keys(app)

    def write(pipe: Any) -> None:
        _refuse_declared(app, name, pipe)
        definition, meta = pipe.hmget(k.entry(name), "definition", "meta")
        if definition is None:
            raise _unknown(name, pipe, k)
        d = store.decode_definition(definition, app)
        if d["enabled"] == enabled:
            return
        last = store.decode_meta(meta)["last_run_at"]
        score = store.due_score(store.next_after(d["schedule"], datetime.now(UTC), anchor=last)) if enabled else -1.0
        pipe.multi()
        pipe.hset(
            k.entry(name),
            "definition",
            store.definition(name, d["task"], d["schedule"], d["args"], d["kwargs"], d.get("options") or {}, enabled),
        )
        pipe.zadd(k.schedule, {k.entry(name): score})

    with redbeat_client(app) as r:
        r.transaction(write, k.entry(name), k.statics)
    return get_schedule(name, app=app)


def delete_schedule(name: str, *, app: TaskkitApp | None = None) -> None:
    """Remove a runtime schedule and its run record."""
    app = app or get_app()
    k = redbeat_keys(app)

    def write(pipe: Any) -> None:
        _refuse_declared(app, name, pipe)
        if not pipe.exists(k.entry(name)):
            raise _unknown(name, pipe, k)
        pipe.multi()
        pipe.delete(k.entry(name))
        pipe.zrem(k.schedule, k.entry(name))

    with redbeat_client(app) as r:
        r.transaction(write, k.entry(name), k.statics)


def run_schedule_now(name: str, *, app: TaskkitApp | None = None) -> str:
    """Send the schedule's task once, now; its timing, last run and count stay. Returns the task id."""
    app = app or get_app()
    definition, *_ = _read(app, name)
    d = store.decode_definition(definition, app)
    options = dict(d.get("options") or {})
    headers = {HEADER_SCHEDULE: name}
    return app.task_named(d["task"]).apply_async(list(d.get("args") or ()), dict(d.get("kwargs") or {}), headers=headers, **options).id


def _as_input(s: Schedule, sched: BaseSchedule) -> dict[str, Any]:
    """A stored schedule as the fields add_schedule takes (what update starts from)."""
    timing = sched.run_every.total_seconds() if s.kind == "every" else s.spec
    raw = {"task": s.task, "args": s.args, "kwargs": s.kwargs, "queue": s.queue, "priority": s.priority, "enabled": s.enabled}
    return {key: v for key, v in {**raw, s.kind: timing, "timezone": s.timezone}.items() if v is not None}


def _unknown(name: str, r: Any, k: RedBeatKeys) -> UnknownSchedule:
    return UnknownSchedule(name, map(k.name, r.zrange(k.schedule, 0, SUGGEST_FROM - 1)))


def _refuse_declared(app: TaskkitApp, name: str, pipe: Any) -> None:
    if name in app.settings.schedules or pipe.sismember(redbeat_keys(app).statics, name):
        raise ScheduleError(name, "declared", True, "a runtime schedule; declared ones change in taskkit.toml and sync when beat starts")


def check_sendable(app: TaskkitApp, name: str, spec: ScheduleSpec) -> None:
    """The checks a submit makes, made when the schedule is stored rather than when it fires."""
    task = app.task_named(spec.task)  # UnknownTask
    try:
        json.dumps([spec.args, spec.kwargs])
        task.check_call(list(spec.args), dict(spec.kwargs), spec.options())
    except (TypeError, ValueError) as exc:
        raise ScheduleError(name, "args", list(spec.args), f"JSON values ({exc})") from None
    except InvalidArguments as exc:
        raise ScheduleError(name, "args", [list(spec.args), dict(spec.kwargs)], f"arguments {spec.task} accepts ({exc.reason})") from None
    except UnknownQueue as exc:
        raise ScheduleError(name, "queue", exc.name, f"a declared queue ({', '.join(exc.known)})") from None
    except InvalidOption as exc:
        raise ScheduleError(name, exc.option, exc.value, exc.reason) from None
