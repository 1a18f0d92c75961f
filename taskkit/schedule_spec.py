"""What a schedule is: exactly one of an interval, a cron in a time zone, or a one-off time.

`parse_spec` checks one schedule from taskkit.toml or the API and returns a ScheduleSpec;
a bad field raises ScheduleError naming it. Nothing here touches Redis.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import BaseSchedule, ParseException, crontab
from celery.schedules import schedule as interval
from redbeat.schedules import rrule

from .errors import ScheduleError
from .kinds import PRIORITY, parse_duration

FIELDS = ("task", "every", "cron", "timezone", "at", "args", "kwargs", "queue", "priority", "enabled")
KINDS = ("every", "cron", "at")
_NAME = re.compile(r"[A-Za-z0-9_][\w.:-]{0,199}")


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
    if priority is not None:
        try:
            PRIORITY.check(priority)
        except ValueError:
            raise bad("priority", PRIORITY.expected) from None
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
