"""Reports over a time window of the run history: per-task counts, rates, percentiles, errors."""

from __future__ import annotations

import html
import io
import json
import time
from typing import Any

import pandas as pd

from .app import TaskkitApp, get_app
from .history import events, runs
from .kinds import Since, choice, epoch, refuse

QUANTILES = (0.5, 0.95, 0.99)
TOP_EXCEPTIONS = 10
FORMATS = ("json", "csv", "html")


def per_task(table: pd.DataFrame) -> pd.DataFrame:
    """From `runs()`: per task the runs, successes, failures, failure and retry rates, and
    p50/p95/p99 of runtime and queue wait (seconds), one row per task."""
    if table.empty:
        return pd.DataFrame(columns=["task", "runs", "succeeded", "failed", "failure_rate", "retry_rate"])
    g = table.assign(succeeded=table["state"] == "SUCCESS", failed=table["state"] == "FAILURE", retried=table["attempts"] > 1).groupby(
        "task", observed=True
    )
    out = pd.DataFrame(
        {
            "runs": g.size(),
            "succeeded": g["succeeded"].sum(),
            "failed": g["failed"].sum(),
            "failure_rate": g["failed"].mean().round(4),
            "retry_rate": g["retried"].mean().round(4),
        }
    )
    for col, name in (("runtime", "runtime"), ("queue_wait", "wait")):
        quantiles = g[col].quantile(list(QUANTILES)).unstack()
        for q in QUANTILES:
            out[f"{name}_p{int(q * 100)}"] = quantiles[q].round(4)
    return out.reset_index().assign(task=lambda d: d["task"].astype(str))


def throughput(table: pd.DataFrame, *, freq: str = "1min") -> pd.DataFrame:
    """From `runs()`: runs finished per `freq` (a pandas frequency), one column per final state."""
    done = table.dropna(subset=["finished_at"])
    if done.empty:
        return pd.DataFrame()
    return done.groupby([pd.Grouper(key="finished_at", freq=freq), "state"], observed=True).size().unstack(fill_value=0)


def slowest(table: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """From `runs()`: the `n` runs with the longest runtime."""
    return table.dropna(subset=["runtime"]).nlargest(n, "runtime")[["id", "task", "state", "worker", "runtime", "queue_wait"]]


def summary(*, since: Since = "24h", until: Since = None, app: TaskkitApp | None = None) -> dict[str, Any]:
    """Per task: runs, successes, failures, failure and retry rates, p50/p95/p99 runtime and
    queue wait (seconds); and the most frequent exceptions. Plain data, ready for JSON."""
    app = app or get_app()
    now = time.time()
    window = {"since": epoch(since, now=now), "until": epoch(until, now=now, option="until") or now}
    table = per_task(runs(since=since, until=until, app=app))
    rows = [{k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in table.to_dict("records")]
    errors = events(since=since, until=until, app=app)
    errors = errors[errors["event"].isin(["failed", "retried", "rejected"])]
    top = (
        errors.groupby(["task", "exc_type"], observed=True).size().sort_values(ascending=False).head(TOP_EXCEPTIONS)
        if len(errors)
        else pd.Series(dtype=int)
    )
    exceptions = [{"task": str(t), "exc_type": str(e), "count": int(n)} for (t, e), n in top.items()]
    return {"window": window, "tasks": rows, "top_exceptions": exceptions}


def render(report: dict[str, Any], fmt: str) -> str:
    """The report as json, csv (the per-task table) or a small self-contained html page."""
    refuse("format", fmt, choice(*FORMATS))
    if fmt == "json":
        return json.dumps(report, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        pd.DataFrame(report["tasks"]).to_csv(buf, index=False)
        return buf.getvalue()
    return _html(report)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No runs in this window.</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(report: dict[str, Any]) -> str:
    w = report["window"]
    span = (
        f"{pd.Timestamp(w['since'], unit='s', tz='UTC'):%Y-%m-%d %H:%M} – {pd.Timestamp(w['until'], unit='s', tz='UTC'):%Y-%m-%d %H:%M} UTC"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>taskkit report</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f4f4f4}</style></head><body>"
        f"<h1>taskkit report</h1><p>{html.escape(span)}</p>"
        f"<h2>Tasks</h2>{_table(report['tasks'])}<h2>Top exceptions</h2>{_table(report['top_exceptions'])}"
        "</body></html>"
    )
