"""Run history, read side: the stream → pandas DataFrames.

`events()` gives one row per lifecycle event, `runs()` one row per task run (latest
state, queue wait, runtime, attempts). Both read the stream in pages of raw rows (the
format of `taskkit.capture.rows`: an entry per batch) and let a C parser build the columns.
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
from .capture import rows
from .capture.rows import FIELDS, SEP, TEXTS, VERSION
from .errors import InvalidOption
from .kinds import Since, epoch
from .leases import seen_read

PAGE_ROWS = 50_000  # rows per XRANGE, about: an entry holds a batch (capture.rows), or one row in the first layout
SLACK = 10.0  # seconds a batch may reach the stream after its events (the recorder writes every 50 ms; longer only
# while Redis is unreachable), and host clocks may differ from Redis': the window reads this much beyond both ends
ROW_PREFIX = (VERSION + SEP).encode()  # how every row of this format begins
TERMINAL = {"succeeded": "SUCCESS", "failed": "FAILURE", "revoked": "REVOKED", "rejected": "REJECTED"}
STATES = {"sent": "SENT", "received": "RECEIVED", "started": "STARTED", "retried": "RETRY", **TERMINAL}
CATEGORIES = ("event", "task", "queue", "worker", "exc_type")
INTEGERS = ("priority", "attempt", "result_size")


def _entries(app: TaskkitApp, start: str, end: str, limit: int | None) -> Iterator[tuple[bytes, int, bytes]]:
    """(id, row count, rows newline-joined) of each stream entry, oldest first, until `limit` rows."""
    with redis_client(app) as client:
        # Same connections, raw reply: redis-py would build a dict per entry.
        raw = redis.Redis(connection_pool=client.connection_pool)
        raw.set_response_callback("XRANGE", lambda response, **_: response)
        count, fetched = min(64, limit or 64), 0
        while limit is None or fetched < limit:
            page = raw.xrange(app.keys.runs(), start, end, count)
            if not page:
                return
            n = 0
            for entry_id, fields in page:
                rows_in = rows.entry_count(fields)
                n += rows_in
                yield entry_id, rows_in, rows.entry_rows(fields)
            fetched += n
            start = b"(" + page[-1][0]
            # entries per page for about PAGE_ROWS rows, growing at most 4x a page (entries differ in size)
            count = max(1, min(PAGE_ROWS, 4 * count, count * PAGE_ROWS // max(n, 1)))


# pandas' parser: text unless said otherwise (an id like "123" stays text, an empty column too)
_DTYPES = {
    **dict.fromkeys(FIELDS, "str"), "version": "category", "ts": "float64",
    **dict.fromkeys(CATEGORIES, "category"), **dict.fromkeys(INTEGERS, "Int64"),
}  # fmt: skip


def _parse(data: bytes) -> pd.DataFrame:
    """Packed rows → typed columns in one pass: pyarrow's multithreaded CSV reader when it is
    installed (the notebook extra), else pandas' C parser (slower; bench.history_load)."""
    try:  # deferred: pyarrow is optional and only the read side wants it
        import pyarrow as pa
        from pyarrow import csv
    except ImportError:
        pa = None
    if pa is None or not data:
        df = pd.read_csv(
            io.BytesIO(data), sep=SEP, header=None, names=list(FIELDS), dtype=_DTYPES, keep_default_na=False,
            na_values=[""], quoting=3, engine="c", encoding="utf-8",
        )  # fmt: skip
        for col in ("version", *CATEGORIES):  # the parser infers "1" as a number: names are text
            if len(df) and df[col].cat.categories.dtype != "str":
                df[col] = df[col].cat.rename_categories(str)
        return df
    types = {**dict.fromkeys(FIELDS, pa.string()), "ts": pa.float64(), **dict.fromkeys(INTEGERS, pa.int64())}
    types.update(dict.fromkeys(("version", *CATEGORIES), pa.dictionary(pa.int32(), pa.string())))
    table = csv.read_csv(
        pa.py_buffer(data),
        read_options=csv.ReadOptions(column_names=list(FIELDS)),
        parse_options=csv.ParseOptions(delimiter=SEP, quote_char=False, double_quote=False, escape_char=False),
        convert_options=csv.ConvertOptions(column_types=types, strings_can_be_null=True, null_values=[""]),
    )
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def _frame(data: bytes) -> pd.DataFrame:
    """The events DataFrame of packed rows (of this format: events() skips entries of others), in event-time order."""
    df = _parse(data).drop(columns="version")
    # Integer nanoseconds convert several times faster than float seconds (unit="s").
    df["ts"] = pd.to_datetime((df["ts"].to_numpy() * 1e9).astype("int64"), unit="ns", utc=True)
    for col in TEXTS:
        present = df[col].notna()
        if present.any():
            df.loc[present, col] = df.loc[present, col].map(json.loads)
    df["cut"] = df["cut"].notna()
    if not df["ts"].is_monotonic_increasing:
        # Processes write their batches independently: event time, not stream order, is truth.
        df = df.sort_values("ts", kind="stable")
    return df.reset_index(drop=True)


def events(
    *,
    since: Since = None,
    until: Since = None,
    task: str | None = None,
    event: str | None = None,
    queue: str | None = None,
    worker: str | None = None,
    limit: int | None = None,
    since_id: str | None = None,
    app: TaskkitApp | None = None,
) -> pd.DataFrame:
    """One row per recorded event (oldest first), filtered by time window, task, event, queue, worker.

    Columns: event, ts (UTC), task, id, parent_id, root_id, rerun_of, queue, priority, worker,
    attempt, args, kwargs (JSON), cut (True when args/kwargs were cut), exc_type, exc_message,
    traceback, result_size (bytes of JSON), eta. `limit` caps the rows read (the oldest
    first). `df.attrs["last_id"]` is where the stream ended: pass it as `since_id` to read
    only the events written since (a refreshing view reads just what is new); with `limit`
    it may also say how far into a batch the limit cut ("ID+K"), so paging loses nothing.
    """
    app = app or get_app()
    now = time.time()
    low, high = (epoch(when, now=now, option=option) for when, option in ((since, "since"), (until, "until")))
    # Entries are stamped by Redis' clock when written, after their events (by the host's clock):
    # read SLACK beyond both ends of the window, then keep the events inside it.
    # since_id: "ID" (read after that entry) or "ID+K" (its first K rows read: a limit cut it)
    after_id, _, done = (since_id or "").partition("+")
    start = (after_id if done else f"({after_id}") if since_id else "-" if low is None else str(max(int((low - SLACK) * 1000), 0))
    end = "+" if high is None else str(int((high + SLACK) * 1000))
    last_id: Any = since_id
    blocks: list[bytes] = []
    taken = 0
    for entry_id, count, block in _entries(app, start, end, None if limit is None else limit + int(done or 0)):
        if not block.startswith(ROW_PREFIX):  # rows of another format version (a newer writer): skipped
            last_id = entry_id
            continue
        skip = int(done) if done and entry_id.decode() == after_id else 0  # the rest of a cut entry
        keep = count - skip if limit is None else min(count - skip, limit - taken)
        if keep < count:  # only part of this entry
            block = b"\n".join(block.split(b"\n")[skip : skip + keep])
        if keep:
            blocks.append(block)
        taken += keep
        if skip + keep < count:  # the limit cuts this entry: the cursor says how far
            last_id = f"{entry_id.decode()}+{skip + keep}"
            break
        last_id = entry_id
    df = _frame(b"\n".join(blocks))  # one copy of the rows, one parse
    for bound, keep in ((low, pd.Series.ge), (high, pd.Series.le)):
        if bound is not None:
            df = df[keep(df["ts"], pd.Timestamp(bound, unit="s", tz="UTC"))]
    for col, value in (("task", task), ("event", event), ("queue", queue), ("worker", worker)):
        if value is not None:
            df = df[df[col] == value]
    df = df.reset_index(drop=True)
    df.attrs["last_id"] = last_id.decode() if isinstance(last_id, bytes) else last_id
    return df


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
    if filters.get("since_id") is not None:  # a run's earlier events would be missing: its state, times, attempts wrong
        raise InvalidOption("since_id", filters["since_id"], "runs() needs every event of a run; read events(since_id=...) instead")
    ev = events(app=app, **filters)
    event, ts = ev["event"], ev["ts"]  # categorical: comparisons work on its codes
    ev = ev.assign(
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
    state = state.astype(str)  # mapped from the categorical events: plain text, then categories of what is there
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
