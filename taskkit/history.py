"""Run history, read side: the stream → pandas DataFrames.

`events()` gives one row per lifecycle event, `runs()` one row per task run (latest
state, queue wait, runtime, attempts). Both read the stream in pages of raw rows (the
format of `taskkit.capture.rows`) and let pandas' C parser build the columns.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import redis

from .app import TaskkitApp, get_app
from .broker import read, redis_client
from .capture.rows import FIELDS, SEP, TEXTS, VERSION
from .kinds import Since, epoch
from .leases import seen_read

PAGE = 50_000  # stream entries per XRANGE
TERMINAL = {"succeeded": "SUCCESS", "failed": "FAILURE", "revoked": "REVOKED", "rejected": "REJECTED"}
STATES = {"sent": "SENT", "received": "RECEIVED", "started": "STARTED", "retried": "RETRY", **TERMINAL}
CATEGORIES = ("event", "task", "queue", "worker", "exc_type")
INTEGERS = ("priority", "attempt", "result_size")


def _stream_id(when: Since, *, now: float, default: str, option: str) -> str:
    seconds = epoch(when, now=now, option=option)
    return default if seconds is None else str(int(seconds * 1000))


# One page of the stream as (last id, the rows joined by newlines): Redis concatenates, so
# the client parses one string per page instead of two nested arrays per event. Pages are
# small enough (PAGE) to keep each call to a few milliseconds of server time.
_PAGE = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
if #entries == 0 then return {'', ''} end
local rows = {}
for i, entry in ipairs(entries) do rows[i] = entry[2][2] end
return {entries[#entries][1], table.concat(rows, '\\n')}
"""


def _raw_pages(app: TaskkitApp, start: str, end: str, limit: int | None) -> Iterator[bytes]:
    """Blocks of packed rows (newline-joined), oldest first, at most `limit` rows in all."""
    with redis_client(app) as client:
        # Same connections, raw reply: redis-py would build a dict per entry.
        raw = redis.Redis(connection_pool=client.connection_pool)
        raw.set_response_callback("XRANGE", lambda response, **_: response)
        fetched = 0
        while limit is None or fetched < limit:
            count = PAGE if limit is None else min(PAGE, limit - fetched)
            page = raw.xrange(app.keys.runs(), start, end, count)
            if not page:
                return
            fetched += len(page)
            yield b"\n".join(fields[1] for _, fields in page)
            start = b"(" + page[-1][0]


_DTYPES = {"version": "category", "ts": "float64", **dict.fromkeys(CATEGORIES, "category"), **dict.fromkeys(INTEGERS, "Int64")}


def _frame(blocks: list[bytes]) -> pd.DataFrame:
    """Packed rows → typed columns, parsed by pandas' C reader in one pass."""
    data = io.BytesIO(b"\n".join(blocks))
    df = pd.read_csv(
        data, sep=SEP, header=None, names=list(FIELDS), dtype=_DTYPES, keep_default_na=False,
        na_values=[""], quoting=3, engine="c", encoding="utf-8",
    )  # fmt: skip
    for col in ("version", *CATEGORIES):  # the parser infers "1" as a number: names are text
        if len(df) and df[col].cat.categories.dtype != "str":
            df[col] = df[col].cat.rename_categories(str)
    if (df["version"] != VERSION).any():
        df = df[df["version"] == VERSION]  # rows of another format version are skipped
    df = df.drop(columns="version")
    df["ts"] = pd.to_datetime(df["ts"], unit="s", utc=True)
    for col in TEXTS:
        present = df[col].notna()
        if present.any():
            df.loc[present, col] = df.loc[present, col].map(json.loads)
    df["cut"] = df["cut"].notna()
    # Processes write their batches independently: event time, not stream order, is truth.
    return df.sort_values("ts", kind="stable").reset_index(drop=True)


def events(
    *,
    since: Since = None,
    until: Since = None,
    task: str | None = None,
    event: str | None = None,
    queue: str | None = None,
    worker: str | None = None,
    limit: int | None = None,
    app: TaskkitApp | None = None,
) -> pd.DataFrame:
    """One row per recorded event (oldest first), filtered by time window, task, event, queue, worker.

    Columns: event, ts (UTC), task, id, parent_id, root_id, rerun_of, queue, priority, worker,
    attempt, args, kwargs (JSON), cut (True when args/kwargs were cut), exc_type, exc_message,
    traceback, result_size (bytes of JSON), eta.
    """
    app = app or get_app()
    now = time.time()
    start = _stream_id(since, now=now, default="-", option="since")
    end = _stream_id(until, now=now, default="+", option="until")
    df = _frame(list(_raw_pages(app, start, end, limit)))
    for col, value in (("task", task), ("event", event), ("queue", queue), ("worker", worker)):
        if value is not None:
            df = df[df[col] == value]
    return df.reset_index(drop=True)


def runs(
    *,
    state: str | None = None,
    queue: str | None = None,
    worker: str | None = None,
    app: TaskkitApp | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """One row per task run: latest state, times, queue wait and runtime (seconds), attempts.

    Filters as for events() (since, until, task, limit); `state` is a Celery state name
    (SUCCESS, FAILURE, RETRY, …); `queue` and `worker` select runs whose queue / last worker
    it is (only some events carry them, so they filter runs, not events). Queue wait is
    first start minus first send (or first receive, for plain Celery clients); runtime is the
    end of the run minus the start of its last attempt.

    A run left RECEIVED or STARTED by a worker that is gone is LOST, with `lost_at`: the
    worker stopped renewing its leases longer than `broker.lease` ago (that time), or started
    again under the same name after the run's last event (that start). Its message goes back
    to the queue (taskkit.leases), and the events of the next attempt join the same run.
    """
    app = app or get_app()
    ev = events(app=app, **filters)
    event, ts = ev["event"].astype(str), ev["ts"]
    ev = ev.assign(
        event=event,
        started=event == "started",
        sent_at=ts.where(event == "sent"),
        received_at=ts.where(event == "received"),
        started_at=ts.where(event == "started"),
        finished_at=ts.where(event.isin(list(TERMINAL))),
    )
    # one grouping for every column (first/last skip missing values)
    out = ev.groupby("id", sort=False).agg(
        task=("task", "first"),
        state=("event", "last"),
        queue=("queue", "last"),
        priority=("priority", "first"),
        worker=("worker", "last"),
        attempts=("started", "sum"),
        sent_at=("sent_at", "min"),
        received_at=("received_at", "min"),
        first_start=("started_at", "min"),
        started_at=("started_at", "max"),
        finished_at=("finished_at", "max"),
        exc_type=("exc_type", "last"),
        exc_message=("exc_message", "last"),
        rerun_of=("rerun_of", "first"),
        last_at=("ts", "max"),
    )
    out["state"], out["lost_at"] = _lost(out["state"].map(STATES), out.pop("last_at"), out["worker"], app)
    queued = out["sent_at"].fillna(out["received_at"])
    out["queue_wait"] = (out.pop("first_start") - queued).dt.total_seconds()
    out["runtime"] = (out["finished_at"] - out["started_at"]).dt.total_seconds()
    out.index.name = "id"
    for col, value in (("state", state), ("queue", queue), ("worker", worker)):
        if value is not None:
            out = out[out[col] == value]
    return out.sort_values("sent_at", na_position="last").reset_index()


def _lost(state: pd.Series, last_at: pd.Series, worker: pd.Series, app: TaskkitApp) -> tuple[pd.Series, pd.Series]:
    """States with LOST for open runs whose worker is gone, and when it went (NaT for the rest)."""
    lost_at = pd.Series(pd.NaT, index=state.index, dtype="datetime64[ns, UTC]")
    open_runs = state.isin(["RECEIVED", "STARTED"])
    if app.settings.broker.lease and open_runs.any():
        seen = read(app, seen_read(app))[0]
        names = worker[open_runs].astype(str)
        last_seen = pd.to_datetime(names.map(lambda n: seen.get(n, (None, None))[0]), unit="s", utc=True)
        born = pd.to_datetime(names.map(lambda n: seen.get(n, (None, None))[1]), unit="s", utc=True)
        stale = last_seen < pd.Timestamp(time.time() - app.settings.broker.lease, unit="s", tz="UTC")
        reborn = born > last_at[open_runs]
        lost_at[open_runs] = last_seen.where(stale, born.where(reborn))
        state = state.mask(lost_at.notna(), "LOST")
    return state.astype("category"), lost_at
