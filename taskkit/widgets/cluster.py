"""ClusterView: workers, queues, schedules, dead letters, Redis and the recorder at a glance, kept current."""

from __future__ import annotations

import weakref
from datetime import UTC, datetime
from typing import Any

from .. import status
from ..app import TaskkitApp
from ..status import Snapshot
from . import html
from .view import View


def _mb(n: Any) -> str:
    return f"{n / 2**20:.1f} MB" if isinstance(n, int) and n else "-"


class ClusterView(View):
    """The fleet from one `taskkit.snapshot()` per refresh (one pipelined Redis round trip for the
    counts, Redis info, one worker broadcast bounded by `timeout`, the soonest schedules)."""

    _live_one: weakref.ReferenceType[ClusterView] | None = None  # the view refreshing live in this kernel

    def __init__(self, *, interval: float = 5.0, timeout: float = status.SNAPSHOT_TIMEOUT, autostart: bool = True,
                 app: TaskkitApp | None = None) -> None:  # fmt: skip
        super().__init__(app=app)
        self.interval, self.timeout, self.autostart = interval, timeout, autostart
        self.refresh()

    def _read(self) -> Snapshot:
        return status.snapshot(timeout=self.timeout, app=self.app)

    # ------------------------------------------------------------ plain data

    def consumers(self) -> dict[str, list[str]]:
        """Queue -> the workers consuming it, from the last snapshot."""
        out: dict[str, list[str]] = {}
        for worker, row in (self.data.workers if self.data else {}).items():
            for q in row.get("queues") or ():
                out.setdefault(q, []).append(worker)
        return out

    def __repr__(self) -> str:  # no I/O: the last snapshot only
        s: Snapshot | None = self.data
        if s is None:
            return f"<ClusterView: {self.error or 'not read yet'}>"
        waiting = sum(q.waiting for q in s.queues)
        dead = sum(s.deadletters.values())
        return (
            f"<ClusterView: {len(s.workers)} workers, {len(s.queues)} queues, {waiting} waiting, {dead} dead letters, {len(s.alerts)} alerts, "
            f"redis {s.redis.get('latency_ms', '?')} ms at {html.when(s.at)} UTC{'; ' + self.error if self.error else ''}>"
        )

    # ------------------------------------------------------------ snapshot

    def _html(self) -> str:
        s: Snapshot | None = self.data
        if s is None:
            return html.box("taskkit cluster", html.error(self.error or "not read yet"))
        consumers = self.consumers()
        workers = html.table(
            ["worker", "pool", "active", "reserved", "scheduled", "processed", "queues", "uptime s"],
            [
                (
                    w,
                    r.get("pool"),
                    r.get("active"),
                    r.get("reserved"),
                    r.get("scheduled"),
                    r.get("processed"),
                    ",".join(r.get("queues") or ()),
                    r.get("uptime"),
                )
                for w, r in sorted(s.workers.items())
            ],
            empty="no worker answered" + (f" (missing: {', '.join(s.missing)})" if s.missing else ""),
        )
        queues = html.table(
            ["queue", "priority", "waiting", "levels", "scheduled", "unacked", "consumers", "dead letters"],
            [
                (
                    q.name,
                    q.priority,
                    q.waiting,
                    " ".join(f"p{p}:{n}" for p, n in sorted(q.levels.items())),
                    q.scheduled,
                    q.unacked,
                    len(consumers.get(q.name, ())),
                    s.deadletters.get(q.name, 0),
                )
                for q in s.queues
            ],
        )
        orphans = {q: n for q, n in s.deadletters.items() if q not in {x.name for x in s.queues}}
        schedules = html.table(
            ["schedule", "every / cron / at", "task", "on", "next run (UTC)", "last run (UTC)", "runs"],
            [
                (
                    x.name,
                    x.describe(),
                    x.task,
                    "yes" if x.enabled else "no",
                    html.when(x.next_run_at),
                    html.when(x.last_run_at),
                    x.total_run_count,
                )
                for x in s.schedules
            ],
            empty="no schedules",
        )
        r = s.redis
        redis = html.table(
            ["latency", "memory", "maxmemory", "policy", "clients", "evicted", "AOF", "history written", "failed", "dropped"],
            [
                (
                    f"{r.get('latency_ms')} ms",
                    _mb(r.get("used_memory_bytes")),
                    _mb(r.get("maxmemory_bytes")) if r.get("maxmemory_bytes") else "none",
                    r.get("maxmemory_policy"),
                    r.get("connected_clients"),
                    r.get("evicted_keys"),
                    "on" if r.get("aof_enabled") else "off",
                    s.recorder["written"],
                    s.recorder["failed"],
                    s.recorder["dropped"],
                )
            ],
        )
        parts = [html.section("Workers", workers), html.section("Queues", queues)]
        if s.alerts:  # as the last `taskkit health` (or the ops.health task) left them
            firing = html.table(
                ["since (UTC)", "rule", "subject", "alert"],
                [(html.when(datetime.fromtimestamp(a["since"], UTC)), a["rule"], a["subject"], a["message"]) for a in s.alerts],
            )
            parts.insert(0, html.section(f"Alerts firing ({len(s.alerts)})", firing))
        if orphans:
            parts.append(html.section("Dead letters of undeclared queues", html.table(["queue", "dead letters"], sorted(orphans.items()))))
        parts += [html.section("Schedules", schedules), html.section("Redis and run history", redis)]
        if self.error:
            parts.insert(0, html.error(self.error))
        return html.box("taskkit cluster", *parts, note=f"at {html.when(s.at)} UTC")

    # ------------------------------------------------------------ live widget

    def _build(self) -> Any:
        import ipywidgets as w

        self._body = w.HTML()
        refresh = w.Button(description="Refresh", icon="refresh", layout=w.Layout(width="auto"))
        refresh.on_click(lambda _: self.refresh())
        self._live_toggle = w.ToggleButton(value=False, description="Live", icon="play", layout=w.Layout(width="auto"))
        self._live_toggle.observe(lambda change: self.start() if change["new"] else self.stop(), names="value")
        return w.VBox([w.HBox([refresh, self._live_toggle]), self._body])

    def _update(self) -> None:
        self._body.value = self._html()

    def start(self, interval: float | None = None) -> bool:
        """Refresh live. A kernel keeps one live ClusterView: re-running its cell stops the previous one."""
        previous = ClusterView._live_one() if ClusterView._live_one is not None else None
        if previous is not None and previous is not self:
            previous.stop()
        live = super().start(interval)
        if live:
            ClusterView._live_one = weakref.ref(self)
        if self._widget is not None and self._live_toggle.value != live:
            self._live_toggle.value = live
        return live

    def stop(self) -> None:
        super().stop()
        if self._widget is not None and self._live_toggle.value:
            self._live_toggle.value = False

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(include, exclude)
        if self.autostart:
            self.start()  # shown: keep it current (without a running loop: one more read)
        return bundle
