"""Small HTML snapshots for `_repr_html_`: escaped values, capped rows, JupyterLab theme variables.

Every value passes through `html.escape`; tables show at most `cap` rows and say how many
more there are; colours come from JupyterLab's CSS variables with fallbacks, so a snapshot
reads in JupyterLab (light or dark), in a rendered notebook on GitHub and in nbval's output.
Tests parse every snapshot as XML, so the markup is well-formed (no bare `<br>`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

CAP = 20  # rows a table shows before "… N more"
CELL = 60  # characters of a value shown in a cell

STYLE = (
    "font-family: var(--jp-ui-font-family, sans-serif); font-size: var(--jp-ui-font-size1, 13px); color: var(--jp-ui-font-color1, black);"
)
MUTED = "color: var(--jp-ui-font-color2, gray);"
BAD = "color: var(--jp-error-color1, #d32f2f);"
GOOD = "color: var(--jp-success-color1, #388e3c);"
TH = "text-align: left; padding: 2px 8px; border-bottom: 1px solid var(--jp-border-color2, #ccc);"
TD = "text-align: left; padding: 2px 8px;"


def text(value: Any) -> str:
    """A value as escaped text for one cell, cut at CELL characters."""
    if value is None:
        return ""
    shown = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(shown) > CELL:
        shown = shown[: CELL - 1] + "…"
    return html.escape(shown)


def pre(value: Any, limit: int = 20_000) -> str:
    """A long text (a traceback) in full, escaped; only its first `limit` characters."""
    shown = "" if value is None else str(value)
    cut = f"\n… {len(shown) - limit} more characters" if len(shown) > limit else ""
    return f'<pre style="{MUTED}">{html.escape(shown[:limit] + cut)}</pre>'


def when(dt: Any) -> str:
    """A datetime to the second, or "-"."""
    return dt.strftime("%Y-%m-%d %H:%M:%S") if dt else "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, cap: int = CAP, empty: str = "none") -> str:
    rows = list(rows)
    if not rows:
        return f'<p style="{MUTED}">{html.escape(empty)}</p>'
    head = "".join(f'<th style="{TH}">{html.escape(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f'<td style="{TD}">{text(c)}</td>' for c in r) + "</tr>" for r in rows[:cap])
    more = f'<p style="{MUTED}">… {len(rows) - cap} more</p>' if len(rows) > cap else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def section(title: str, body: str) -> str:
    return f"<div><strong>{html.escape(title)}</strong>{body}</div>"


def box(title: str, *parts: str, note: str = "") -> str:
    """The outer frame of a snapshot: a title line, an optional muted note, the parts."""
    extra = f' <span style="{MUTED}">{html.escape(note)}</span>' if note else ""
    return f'<div style="{STYLE}"><div><strong>{html.escape(title)}</strong>{extra}</div>{"".join(parts)}</div>'


def error(message: str) -> str:
    return f'<p style="{BAD}">{html.escape(message)}</p>'
