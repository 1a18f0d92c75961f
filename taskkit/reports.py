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


def summary(*, since: Since = "24h", until: Since = None, app: TaskkitApp | None = None) -> dict[str, Any]:
    """Per task: runs, successes, failures, failure and retry rates, p50/p95/p99 runtime and
    queue wait (seconds); and the most frequent exceptions. Plain data, ready for JSON."""
    app = app or get_app()
    now = time.time()
    window = {"since": epoch(since, now=now), "until": epoch(until, now=now, option="until") or now}
    table = runs(since=since, until=until, app=app)
    rows = []
    for task, g in table.groupby("task", observed=True):
        row: dict[str, Any] = {
            "task": str(task),
            "runs": len(g),
            "succeeded": int((g["state"] == "SUCCESS").sum()),
            "failed": int((g["state"] == "FAILURE").sum()),
            "failure_rate": round(float((g["state"] == "FAILURE").mean()), 4),
            "retry_rate": round(float((g["attempts"] > 1).mean()), 4),
        }
        for col, name in (("runtime", "runtime"), ("queue_wait", "wait")):
            values = g[col].dropna()
            for q in QUANTILES:
                row[f"{name}_p{int(q * 100)}"] = round(float(values.quantile(q)), 4) if len(values) else None
        rows.append(row)
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
