"""Task tallies: the counters and histograms the metrics exporter serves, kept beside the run history.

The recorder adds each event's tallies in the same script call that appends the event to
the stream, so the two never disagree, nothing is missed while no exporter runs, and an
exporter restart counts nothing twice: a scrape reads one hash (`Keys.tallies`), whatever
the event rate. Fields are SEP-joined: "c" task queue state (a count), "r"/"w" task bucket
(runtime / queue wait observations per bucket, not cumulative), "rs"/"ws" task (their sums).
Runs that ended are also counted per minute (`Keys.minute`: "ended", "failed"; kept a day),
which is what the failure-rate alert sums over its window.

Labels are bounded here, at write time: a task name the recording process has not
registered and a queue taskkit.toml does not declare are tallied as "other".
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from .rows import SEP

STATES = ("succeeded", "failed", "retried", "revoked", "rejected")  # the events a run's tally counts
ENDED = ("succeeded", "failed", "revoked", "rejected")  # a run's last event
MINUTE_TTL = 86400  # seconds a per-minute count is kept
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, math.inf)  # seconds
OTHER = "other"


def label(app: Any, task: str | None, queue: str | None) -> tuple[str, str]:
    """The (task, queue) labels of an event: registered and declared names, the rest "other"."""
    return (task if task in app.tasks else OTHER), (queue if queue in app.settings.queues else OTHER)


def _bucket(seconds: float) -> str:
    return repr(next(le for le in BUCKETS if seconds <= le))


def fields(
    event: str, task: str, queue: str, *, runtime: float | None = None, wait: float | None = None, at: float | None = None
) -> tuple[Any, ...]:
    """(count fields, (sum field, seconds) pairs, (minute, field) pairs) one event at time `at` adds."""
    counts: list[str] = []
    sums: list[tuple[str, float]] = []
    minutes: list[tuple[int, str]] = []
    if event in STATES:
        counts.append(SEP.join(("c", task, queue, event)))
    if event in ENDED:
        minute = int((time.time() if at is None else at) // 60)
        minutes += [(minute, "ended")] + ([(minute, "failed")] if event == "failed" else [])
    for kind, seconds in (("r", runtime), ("w", wait)):
        if seconds is not None and seconds >= 0:
            counts.append(SEP.join((kind, task, _bucket(seconds))))
            sums.append((f"{kind}s{SEP}{task}", seconds))
    return tuple(counts), tuple(sums), tuple(minutes)


@dataclass
class Histogram:
    buckets: dict[float, int] = field(default_factory=dict)  # le -> observations in that bucket alone
    sum: float = 0.0

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for le in BUCKETS:
            total += self.buckets.get(le, 0)
            out.append(("+Inf" if le == math.inf else repr(le), total))
        return out


@dataclass
class Tallies:
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (task, queue, state) -> runs
    runtime: dict[str, Histogram] = field(default_factory=dict)  # task -> seconds
    wait: dict[str, Histogram] = field(default_factory=dict)


def parse(raw: dict[bytes, bytes]) -> Tallies:
    """The tallies hash as counts and per-task histograms."""
    out = Tallies()
    for key, value in raw.items():
        kind, *rest = key.decode().split(SEP)
        if kind == "c" and len(rest) == 3:
            out.counts[(rest[0], rest[1], rest[2])] = int(value)
        elif kind in ("r", "w") and len(rest) == 2:
            hist = (out.runtime if kind == "r" else out.wait).setdefault(rest[0], Histogram())
            hist.buckets[float(rest[1])] = int(value)
        elif kind in ("rs", "ws") and len(rest) == 1:
            (out.runtime if kind == "rs" else out.wait).setdefault(rest[0], Histogram()).sum = float(value)
    return out
