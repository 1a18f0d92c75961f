"""Schedules' stored form in Redis (celery-redbeat's), and the fire-time arithmetic beat and the API share.

Storage is redbeat's, under the names `keys.redbeat_keys()` gives: one hash per schedule
(`definition`: JSON of task, args, kwargs, options, schedule, enabled; `meta`: last_run_at
and total_run_count), a sorted set of next due times (UNIX seconds; -1 when disabled or
finished), the set of names declared in taskkit.toml, and the active beat's lock.
Written by `taskkit.schedules` (the API) and `taskkit.beat` (the scheduler); read by both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from celery.schedules import BaseSchedule, crontab, maybe_schedule
from celery.utils.time import remaining
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
from redbeat.schedules import rrule

from .schedule_spec import ZonedCrontab

HEADER_SCHEDULE, HEADER_DUE = "taskkit_schedule", "taskkit_due"  # on every scheduled message: an idempotency key


class Encoder(RedBeatJSONEncoder):
    def default(self, obj: Any) -> Any:
        if isinstance(obj, ZonedCrontab):  # redbeat's crontab form, plus its zone
            return {**super().default(obj), "timezone": obj.timezone}
        return super().default(obj)


class Decoder(RedBeatJSONDecoder):
    def dict_to_object(self, d: dict[str, Any]) -> Any:
        if d.get("__type__") == "crontab" and "timezone" in d:
            fields = {k: v for k, v in d.items() if k not in ("__type__", "timezone")}
            return ZonedCrontab(timezone=d["timezone"], **fields)
        return super().dict_to_object(d)


def dumps(obj: Any) -> str:
    # sorted and compact: equal definitions are equal strings (the declared sync compares them)
    return json.dumps(obj, cls=Encoder, sort_keys=True, separators=(",", ":"))


def definition(name: str, task: str, sched: BaseSchedule, args: Any, kwargs: Any, options: Mapping[str, Any], enabled: bool) -> str:
    return dumps(
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


def decode_definition(text: str, app: Any) -> dict[str, Any]:
    d = json.loads(text, cls=Decoder)
    d["schedule"] = maybe_schedule(d["schedule"], app=app)
    d.setdefault("enabled", True)
    return d


def decode_meta(text: str | None) -> dict[str, Any]:
    meta = json.loads(text, cls=RedBeatJSONDecoder) if text else {}
    return {"last_run_at": meta.get("last_run_at"), "total_run_count": meta.get("total_run_count") or 0}


def meta(last_run_at: datetime | None, count: int) -> str:
    return dumps({"last_run_at": last_run_at, "total_run_count": count})


# ---------------------------------------------------------------- fire times


def next_after(sched: BaseSchedule, now: datetime, anchor: datetime | None = None) -> datetime | None:
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


def fire_times(sched: BaseSchedule, score: float, now: datetime, until: datetime, limit: float) -> list[datetime]:
    """Fire times from a stored due time on, as beat will send them: an overdue one goes now."""
    due = datetime.fromtimestamp(score, UTC)
    out: list[datetime] = []
    t: datetime | None = due
    if due < now:
        out.append(now)
        t = next_after(sched, now, anchor=due)
    while t is not None and t <= until and len(out) < limit:
        out.append(t)
        t = next_after(sched, t, anchor=t)
    return out[: int(min(limit, len(out)))]


def due_score(dt: datetime | None) -> float:
    return dt.timestamp() if dt is not None else -1.0  # redbeat: a score < 0 is never due


def utc(score: float | None) -> datetime | None:
    return datetime.fromtimestamp(score, UTC) if score is not None and score >= 0 else None
