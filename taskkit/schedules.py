"""Schedules: declared in taskkit.toml or added at run time, kept in Redis by celery-redbeat.

Storage is redbeat's, under the names `keys.redbeat_keys()` gives: one hash per schedule
(`definition`: JSON of task, args, kwargs, options, schedule, enabled; `meta`: last_run_at
and total_run_count), a sorted set of next due times (UNIX seconds; -1 when disabled or
finished), the set of names declared in taskkit.toml, and the active beat's lock.
The beat scheduler that runs them is `taskkit.beat.Scheduler`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis
from celery.schedules import BaseSchedule, ParseException, crontab, maybe_schedule
from celery.schedules import schedule as interval
from celery.utils.time import remaining
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
from redbeat.schedulers import get_redis
from redbeat.schedules import rrule

from .app import TaskkitApp, get_app
from .broker import REDIS_ERRORS, unavailable
from .config import parse_duration
from .errors import InvalidArguments, InvalidOption, ScheduleError, TaskkitError, UnknownQueue, UnknownSchedule
from .keys import RedBeatKeys, redbeat_keys

log = logging.getLogger(__name__)

FIELDS = ("task", "every", "cron", "timezone", "at", "args", "kwargs", "queue", "priority", "enabled")
KINDS = ("every", "cron", "at")
DUE_BATCH = 500  # due entries one tick reads and sends at most; more wait for an immediate next tick
REDIS_RETRY = 1.0  # seconds beat waits before trying an unreachable Redis again
NEXT_RUNS = 5  # fire times `show` lists by default
SUGGEST_FROM = 10_000  # names an unknown-schedule error looks through for "did you mean"
HEADER_SCHEDULE, HEADER_DUE = "taskkit_schedule", "taskkit_due"  # on every scheduled message: an idempotency key
_NAME = re.compile(r"[A-Za-z0-9_][\w.:-]{0,199}")


# ---------------------------------------------------------------- what a schedule is


class ZonedCrontab(crontab):
    """A crontab read in its own IANA time zone (Celery's crontab reads the app's)."""

    def __init__(
        self,
        minute: Any = "*",
        hour: Any = "*",
        day_of_week: Any = "*",
        day_of_month: Any = "*",
        month_of_year: Any = "*",
        *,
        timezone: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(minute, hour, day_of_week, day_of_month, month_of_year, **kwargs)
        self.timezone = timezone

    @property
    def tz(self) -> ZoneInfo:  # type: ignore[override]
        return ZoneInfo(self.timezone)  # ZoneInfo caches its instances

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ZonedCrontab) and other.timezone == self.timezone and super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<crontab: {cron_text(self)} {self.timezone}>"


def cron_text(c: crontab) -> str:
    # Celery keeps the fields as given only in these attributes (redbeat's encoder reads them too)
    return " ".join(str(f) for f in (c._orig_minute, c._orig_hour, c._orig_day_of_month, c._orig_month_of_year, c._orig_day_of_week))


@dataclass(frozen=True)
class ScheduleSpec:
    """A validated schedule: exactly one of `every` (seconds), `cron` (with `timezone`) or `at`."""

    task: str
    every: float | None = None
    cron: str | None = None  # "minute hour day-of-month month day-of-week"
    timezone: str | None = None  # IANA name: required with cron
    at: datetime | None = None  # aware, to the second: a one-off
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    enabled: bool = True

    def celery_schedule(self, app: Any = None) -> BaseSchedule:
        if self.every is not None:
            return interval(timedelta(seconds=self.every), app=app)
        if self.cron is not None:
            m, h, dom, mon, dow = self.cron.split()
            return ZonedCrontab(m, h, dow, dom, mon, timezone=self.timezone or "UTC", app=app)
        return rrule("SECONDLY", dtstart=self.at, count=1, app=app)  # redbeat's rrule: one occurrence

    def options(self) -> dict[str, Any]:
        return {k: v for k, v in (("queue", self.queue), ("priority", self.priority)) if v is not None}

    def beat_entry(self) -> dict[str, Any]:
        """The entry Celery's `beat_schedule` holds for this schedule."""
        return {
            "task": self.task,
            "schedule": self.celery_schedule(),
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "options": self.options(),
            "enabled": self.enabled,
        }


def parse_spec(name: str, raw: Mapping[str, Any], *, past_ok: bool = False) -> ScheduleSpec:
    """Check one schedule (from taskkit.toml or the API); raises ScheduleError naming the field.

    `past_ok` lets a declared one-off stay in the file after its time has passed.
    """

    def bad(key: str, expected: str) -> ScheduleError:
        return ScheduleError(name, key, raw.get(key), expected)

    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ScheduleError(str(name), "name", name, "letters, digits and _ . : - (at most 200, not starting with . : -)")
    for key in raw:
        if key not in FIELDS:
            raise bad(key, f"one of {', '.join(FIELDS)}")
    task = raw.get("task")
    if not isinstance(task, str) or not task:
        raise bad("task", "a task name such as 'taskkit.ops.health'")
    given = [k for k in KINDS if raw.get(k) is not None]
    if len(given) != 1:
        raise ScheduleError(name, "schedule", {k: raw[k] for k in given} or None, "exactly one of every, cron or at")
    tz = raw.get("timezone")
    if tz is not None and (not isinstance(tz, str) or not _zone_exists(tz)):
        raise bad("timezone", "an IANA time zone such as 'UTC' or 'Europe/Berlin'")
    spec: dict[str, Any] = {}
    if "every" in given:
        try:
            spec["every"] = parse_duration(raw["every"])
        except ValueError:
            spec["every"] = 0.0
        if spec["every"] <= 0:
            raise bad("every", 'a positive duration such as "15m", "2h", "0.5s" or 90 (seconds)')
        if tz is not None:
            raise bad("timezone", "no timezone with every (an interval is the same in every zone)")
    elif "cron" in given:
        spec["cron"] = _cron(name, raw["cron"])
        if tz is None:
            raise bad("timezone", "an explicit IANA time zone with cron, such as 'UTC' or 'Europe/Berlin'")
        spec["timezone"] = tz
    else:
        spec["at"] = _at(name, raw["at"], tz, past_ok)
    args, kwargs = raw.get("args", ()), raw.get("kwargs") or {}
    if not isinstance(args, (list, tuple)):
        raise bad("args", "a list of arguments")
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise bad("kwargs", "a table of keyword arguments")
    queue, priority, enabled = raw.get("queue"), raw.get("priority"), raw.get("enabled", True)
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise bad("queue", "a queue name")
    if priority is not None and (isinstance(priority, bool) or priority not in range(10)):
        raise bad("priority", "a priority 0-9 (0 is the highest)")
    if not isinstance(enabled, bool):
        raise bad("enabled", "true or false")
    return ScheduleSpec(task=task, args=tuple(args), kwargs=dict(kwargs), queue=queue, priority=priority, enabled=enabled, **spec)


def _zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True


def _cron(name: str, expr: Any) -> str:
    expected = "a cron expression 'minute hour day-of-month month day-of-week' such as '0 3 * * *'"
    fields = expr.split() if isinstance(expr, str) else []
    if len(fields) != 5:
        raise ScheduleError(name, "cron", expr, expected)
    m, h, dom, mon, dow = fields
    try:
        crontab(m, h, dow, dom, mon)
    except (ValueError, TypeError, ParseException) as exc:
        raise ScheduleError(name, "cron", expr, f"{expected} ({exc})") from None
    return " ".join(fields)


def _at(name: str, value: Any, tz: str | None, past_ok: bool) -> datetime:
    at = value
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            at = None
    if not isinstance(at, datetime):  # a TOML date without a time is a `date`
        raise ScheduleError(
            name, "at", value if not isinstance(value, date) else str(value), "an ISO time such as 2030-10-01T09:00:00+02:00"
        )
    if at.tzinfo is None:
        if tz is None:
            raise ScheduleError(name, "at", str(at), "a time with a UTC offset, or a timezone beside it: a naive time is ambiguous")
        at = at.replace(tzinfo=ZoneInfo(tz))
    elif tz is not None:
        raise ScheduleError(name, "timezone", tz, "no timezone with an `at` that has its own offset")
    at = at.replace(microsecond=0)  # redbeat stores a one-off to the second
    now = datetime.now(UTC)
    if not past_ok and at <= now:
        raise ScheduleError(name, "at", at.isoformat(), f"a time in the future (it is {now:%Y-%m-%dT%H:%M:%S}+00:00)")
    return at


# ---------------------------------------------------------------- stored form


class _Encoder(RedBeatJSONEncoder):
    def default(self, obj: Any) -> Any:
        if isinstance(obj, ZonedCrontab):  # redbeat's crontab form, plus its zone
            return {**super().default(obj), "timezone": obj.timezone}
        return super().default(obj)


class _Decoder(RedBeatJSONDecoder):
    def dict_to_object(self, d: dict[str, Any]) -> Any:
        if d.get("__type__") == "crontab" and "timezone" in d:
            fields = {k: v for k, v in d.items() if k not in ("__type__", "timezone")}
            return ZonedCrontab(timezone=d["timezone"], **fields)
        return super().dict_to_object(d)


def _dumps(obj: Any) -> str:
    # sorted and compact: equal definitions are equal strings (the declared sync compares them)
    return json.dumps(obj, cls=_Encoder, sort_keys=True, separators=(",", ":"))


def _definition(name: str, task: str, sched: BaseSchedule, args: Any, kwargs: Any, options: Mapping[str, Any], enabled: bool) -> str:
    return _dumps(
        {
            "name": name,
            "task": task,
            "schedule": sched,
            "args": list(args or ()),
            "kwargs": dict(kwargs or {}),
            "options": dict(options),
            "enabled": enabled,
        }
    )


def _decode_definition(text: str, app: Any) -> dict[str, Any]:
    d = json.loads(text, cls=_Decoder)
    d["schedule"] = maybe_schedule(d["schedule"], app=app)
    d.setdefault("enabled", True)
    return d


def _decode_meta(text: str | None) -> dict[str, Any]:
    meta = json.loads(text, cls=RedBeatJSONDecoder) if text else {}
    return {"last_run_at": meta.get("last_run_at"), "total_run_count": meta.get("total_run_count") or 0}


def _meta(last_run_at: datetime | None, count: int) -> str:
    return _dumps({"last_run_at": last_run_at, "total_run_count": count})


# ---------------------------------------------------------------- fire times


def _next_after(sched: BaseSchedule, now: datetime, anchor: datetime | None = None) -> datetime | None:
    """The first fire time strictly after `now`; an interval keeps to the grid through `anchor`.

    Missed times are skipped, not made up in a burst: beat sends an overdue entry once.
    """
    if isinstance(sched, rrule):
        return sched.rrule.after(now)
    if isinstance(sched, crontab):
        start, delta, at = sched.remaining_delta(now)
        return at + remaining(start, delta, at)  # Celery's own arithmetic, DST included
    every = sched.run_every
    if anchor is None:
        return now + every
    return anchor + every * (max(0, (now - anchor) // every) + 1)


def _fire_times(sched: BaseSchedule, score: float, now: datetime, until: datetime, limit: float) -> list[datetime]:
    """Fire times from a stored due time on, as beat will send them: an overdue one goes now."""
    due = datetime.fromtimestamp(score, UTC)
    out: list[datetime] = []
    t: datetime | None = due
    if due < now:
        out.append(now)
        t = _next_after(sched, now, anchor=due)
    while t is not None and t <= until and len(out) < limit:
        out.append(t)
        t = _next_after(sched, t, anchor=t)
    return out[: int(min(limit, len(out)))]


def _ts(dt: datetime | None) -> float:
    return dt.timestamp() if dt is not None else -1.0  # redbeat: a score < 0 is never due


def _utc(score: float | None) -> datetime | None:
    return datetime.fromtimestamp(score, UTC) if score is not None and score >= 0 else None


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
    d = _decode_definition(definition, app)
    kind, spec, tz = _kind(d["schedule"])
    m = _decode_meta(meta)
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
        next_run_at=_utc(score),
        last_run_at=last.astimezone(UTC) if last else None,
        total_run_count=m["total_run_count"],
    )


# ---------------------------------------------------------------- the API


@contextmanager
def _redis(app: TaskkitApp) -> Iterator[Any]:
    """redbeat's client (decoded strings); connection errors become BrokerUnavailable."""
    try:
        yield get_redis(app)
    except REDIS_ERRORS as exc:
        raise unavailable(app, exc) from None


def list_schedules(*, limit: int | None = None, app: TaskkitApp | None = None) -> list[Schedule]:
    """Every schedule: scheduled ones by next run, then disabled and finished ones."""
    app = app or get_app()
    k = redbeat_keys(app)
    with _redis(app) as r:
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
    with _redis(app) as r, r.pipeline(transaction=False) as pipe:
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
    definition, _meta_text, score, _ = _read(app, name)
    sched = _decode_definition(definition, app)["schedule"]
    if score is None or score < 0:
        return []
    times = _fire_times(sched, score, datetime.now(UTC), datetime.max.replace(tzinfo=UTC) - timedelta(days=1), count)
    tz = getattr(sched, "timezone", None)
    return [t.astimezone(ZoneInfo(tz)) if tz else t.astimezone(UTC) for t in times]


def upcoming(*, window: float | str = 86400.0, limit: int | None = None, app: TaskkitApp | None = None) -> list[Upcoming]:
    """Every fire time of every enabled schedule within `window` (seconds or "24h") from now.

    Only schedules whose next due time falls in the window are read: the due-time sorted
    set answers that, so the cost follows the answer, not the number of schedules.
    """
    app = app or get_app()
    try:
        seconds = parse_duration(window)
    except ValueError:
        raise TaskkitError(f'window={window!r}: expected a duration such as "24h" or 3600 (seconds)') from None
    k = redbeat_keys(app)
    now = datetime.now(UTC)
    until = now + timedelta(seconds=seconds)
    with _redis(app) as r:
        rows = r.zrangebyscore(k.schedule, 0, until.timestamp(), withscores=True)
        with r.pipeline(transaction=False) as pipe:
            for key, _ in rows:
                pipe.hget(key, "definition")
            definitions = pipe.execute()
    out = []
    for (key, score), definition in zip(rows, definitions, strict=True):
        if definition is None:
            continue
        d = _decode_definition(definition, app)
        times = _fire_times(d["schedule"], score, now, until, limit if limit is not None else math.inf)
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
    _check_call(app, name, spec)
    k = redbeat_keys(app)
    sched = spec.celery_schedule(app)
    definition = _definition(name, spec.task, sched, spec.args, spec.kwargs, spec.options(), spec.enabled)
    score = _ts(_next_after(sched, datetime.now(UTC))) if spec.enabled else -1.0

    def write(pipe: Any) -> None:
        _refuse_declared(app, name, pipe)
        if pipe.exists(k.entry(name)):
            raise ScheduleError(name, "name", name, "a name not in use (`taskkit schedules update` changes a schedule)")
        pipe.multi()
        pipe.hset(k.entry(name), mapping={"definition": definition, "meta": _meta(None, 0)})
        pipe.zadd(k.schedule, {k.entry(name): score})

    with _redis(app) as r:
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
        raw = _as_input(old, _decode_definition(definition, app)["schedule"])
        if changes.keys() & set(KINDS):  # new timing: a cron keeps its zone unless given one
            keep_zone = "cron" in changes and old.kind == "cron"
            raw = {key: v for key, v in raw.items() if key not in KINDS and (key != "timezone" or keep_zone)}
        spec = parse_spec(name, raw | changes, past_ok="at" not in changes)
        _check_call(app, name, spec)
        sched = spec.celery_schedule(app)
        pipe.multi()
        pipe.hset(k.entry(name), "definition", _definition(name, spec.task, sched, spec.args, spec.kwargs, spec.options(), spec.enabled))
        if retime and spec.enabled:
            pipe.zadd(k.schedule, {k.entry(name): _ts(_next_after(sched, datetime.now(UTC), anchor=old.last_run_at))})

    with _redis(app) as r:
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
        d = _decode_definition(definition, app)
        if d["enabled"] == enabled:
            return
        last = _decode_meta(meta)["last_run_at"]
        score = _ts(_next_after(d["schedule"], datetime.now(UTC), anchor=last)) if enabled else -1.0
        pipe.multi()
        pipe.hset(
            k.entry(name),
            "definition",
            _definition(name, d["task"], d["schedule"], d["args"], d["kwargs"], d.get("options") or {}, enabled),
        )
        pipe.zadd(k.schedule, {k.entry(name): score})

    with _redis(app) as r:
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

    with _redis(app) as r:
        r.transaction(write, k.entry(name), k.statics)


def run_schedule_now(name: str, *, app: TaskkitApp | None = None) -> str:
    """Send the schedule's task once, now; its timing, last run and count stay. Returns the task id."""
    app = app or get_app()
    definition, *_ = _read(app, name)
    d = _decode_definition(definition, app)
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


def _check_call(app: TaskkitApp, name: str, spec: ScheduleSpec) -> None:
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


def eviction_warning(app: TaskkitApp) -> str | None:
    """A warning when Redis may evict any key under memory pressure, schedules included."""
    try:
        with _redis(app) as r:
            policy = r.info("memory").get("maxmemory_policy", "")
    except (TaskkitError, redis.ResponseError):  # INFO may be renamed away on managed Redis
        return None
    if not policy.startswith("allkeys-"):
        return None
    return (
        f"Redis maxmemory-policy is {policy}: under memory pressure it may drop schedules, their run records "
        "and the beat lock. Set maxmemory-policy to noeviction (taskkit's local stack and deploy do)."
    )
