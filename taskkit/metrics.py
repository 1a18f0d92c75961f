"""Prometheus metrics: a collector over what taskkit keeps in Redis, and an endpoint with auth.

`Collector(app)` is a prometheus_client collector: each scrape is two Redis round trips
(a PING for latency, then one pipeline for everything else; a third reads the oldest
message of queues that have any waiting) and never raises. Task counts
and the runtime and queue-wait histograms come from the tallies the history recorder adds
with every batch it writes (taskkit.capture.tallies), so nothing is missed while no
exporter runs and a restarted exporter counts nothing twice. With Redis down a scrape
answers `taskkit_redis_up 0` (and the exporter's own metrics), not an error.

`serve()` is `taskkit metrics serve`: the collector behind HTTP that wants a bearer token
(TASKKIT_METRICS_TOKEN or `metrics.token_file`) or basic auth (TASKKIT_METRICS_BASIC_AUTH,
"user:password"), compared in constant time; anything else gets 401.
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from . import alerts, deadletters, queues
from .app import TaskkitApp, get_app
from .broker import Read, read, redis_client, unavailable
from .capture import recorder, tallies
from .errors import BrokerUnavailable, ConfigError
from .keys import redbeat_keys
from .leases import presence_read

log = logging.getLogger(__name__)

TOKEN_ENV = "TASKKIT_METRICS_TOKEN"
BASIC_ENV = "TASKKIT_METRICS_BASIC_AUTH"
PARTS = ("tasks", "queues", "deadletters", "workers", "beat", "redis", "recorder")  # collector_success{collector}


def _gauge(name: str, doc: str, value: float | None = None, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value, labels=labels or None)


class Collector:
    """Every taskkit metric, read at scrape time (see the module docstring and the README's table)."""

    def __init__(self, app: TaskkitApp | None = None, *, per_level: bool | None = None) -> None:
        self.app = app or get_app()
        self.per_level = self.app.settings.metrics.per_level if per_level is None else per_level

    def describe(self) -> list[Metric]:
        return []  # registering must not touch Redis

    def collect(self) -> Iterator[Metric]:
        start = time.perf_counter()
        ok = dict.fromkeys(PARTS, 0)
        try:
            latency, replies = self._read()
        except BrokerUnavailable as exc:
            log.warning("taskkit metrics: %s", exc)
            yield _gauge("taskkit_redis_up", "1 if the exporter reached Redis in this scrape", 0)
        else:
            yield _gauge("taskkit_redis_up", "1 if the exporter reached Redis in this scrape", 1)
            for part, build in zip(PARTS, self._builders(latency), strict=True):
                try:
                    families = list(build(replies[part]))
                except Exception:  # one part's surprise must not hide the others
                    log.exception("taskkit metrics: the %s collector failed", part)
                    continue
                ok[part] = 1
                yield from families
        success = _gauge("taskkit_exporter_collector_success", "1 if the collector's part of this scrape worked", labels=("collector",))
        for part, value in ok.items():
            success.add_metric([part], value)
        yield success
        yield _gauge("taskkit_exporter_scrape_duration_seconds", "How long this scrape took", time.perf_counter() - start)

    # ------------------------------------------------------------ reading

    def _read(self) -> tuple[float, dict[str, Any]]:
        app = self.app
        with redis_client(app) as client:  # connection errors come out as BrokerUnavailable
            begin = time.perf_counter()
            client.ping()
            latency = time.perf_counter() - begin
        reads: dict[str, Read[Any]] = {
            "tasks": Read(lambda pipe: pipe.hgetall(app.keys.tallies()), lambda r: tallies.parse(r[0])),
            "queues": queues.counts_read(app),
            "deadletters": deadletters.counts_read(app),
            "workers": presence_read(app),
            "beat": _beat_read(app),
            "redis": Read(lambda pipe: pipe.info(), lambda r: r[0]),
            "recorder": recorder.stats_read(app),
        }
        try:
            replies = dict(zip(reads, read(app, *reads.values()), strict=True))
            # a third round trip only while messages wait: the oldest one's age per queue
            replies["queues"] = (replies["queues"], alerts.oldest_waiting(app, [r for r in replies["queues"] if r.declared], time.time()))
            return latency, replies
        except BrokerUnavailable:
            raise
        except Exception as exc:  # a reply we cannot parse, INFO renamed away: report Redis, not a 500
            raise unavailable(app, exc) from None

    def _builders(self, latency: float) -> list[Callable[[Any], Iterable[Metric]]]:
        return [_tasks, self._queues, _deadletters, _workers, _beat, lambda info: _redis(info, latency), _recorder]

    def _queues(self, counted: tuple[list[queues.QueueInfo], dict[str, float]]) -> Iterator[Metric]:
        rows, oldest = counted
        families = {
            "waiting": _gauge("taskkit_queue_waiting_messages", "Messages waiting in a queue, all priority levels", labels=("queue",)),
            "scheduled": _gauge("taskkit_queue_scheduled_messages", "Messages held by workers for an ETA or countdown", labels=("queue",)),
            "unacked": _gauge("taskkit_queue_unacked_messages", "Messages delivered to workers, not yet acknowledged", labels=("queue",)),
        }
        levels = _gauge("taskkit_queue_level_waiting_messages", "Messages waiting at one priority level", labels=("queue", "priority"))
        for row in rows:
            if not row.declared:
                continue  # undeclared lists: `taskkit queues` shows them; unbounded names stay out of labels
            for attr, family in families.items():
                family.add_metric([row.name], getattr(row, attr))
            for priority, waiting in (row.levels or {}).items():
                levels.add_metric([row.name, str(priority)], waiting)
        yield from families.values()
        age = _gauge(
            "taskkit_queue_oldest_waiting_seconds", "How long the oldest waiting message has waited (taskkit-sent ones)", labels=("queue",)
        )
        for name, seconds in sorted(oldest.items()):
            age.add_metric([name], seconds)
        yield age
        if self.per_level:
            yield levels


def _beat_read(app: TaskkitApp) -> Read[dict[str, Any]]:
    schedule = redbeat_keys(app).schedule

    def enqueue(pipe: Any) -> None:
        pipe.hgetall(app.keys.beat_status())
        pipe.zrangebyscore(schedule, 0, time.time(), start=0, num=1, withscores=True)  # the most overdue entry
        pipe.zcard(schedule)

    def parse(replies: list[Any]) -> dict[str, Any]:
        status, overdue, count = replies
        return {
            "holder": status.get(b"holder", b"").decode() or None,
            "tick": float(status[b"tick"]) if b"tick" in status else None,
            "overdue_since": overdue[0][1] if overdue else None,
            "schedules": count,
            "lock_timeout": app.settings.beat.lock_timeout,
        }

    return Read(enqueue, parse)


# ---------------------------------------------------------------- one builder per part


def _tasks(t: tallies.Tallies) -> Iterator[Metric]:
    counts = CounterMetricFamily("taskkit_tasks", "Task runs that ended, by final state (and retries)", labels=("task", "queue", "state"))
    for (task, queue, state), n in sorted(t.counts.items()):
        counts.add_metric([task, queue, state], n)
    yield counts
    for name, doc, hists in (
        ("taskkit_task_runtime_seconds", "Runtime of each attempt that ended", t.runtime),
        ("taskkit_task_queue_wait_seconds", "From publish (or ETA) to the start of each attempt", t.wait),
    ):
        family = HistogramMetricFamily(name, doc, labels=("task",))
        for task, hist in sorted(hists.items()):
            family.add_metric([task], hist.cumulative(), sum_value=hist.sum)
        yield family


def _deadletters(counts: dict[str, int]) -> Iterator[Metric]:
    family = _gauge("taskkit_dead_letters", "Dead letters kept, by the queue their task came from", labels=("queue",))
    for queue, n in sorted(counts.items()):
        family.add_metric([queue], n)
    yield family


def _workers(live: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    yield _gauge("taskkit_workers", "Workers that renewed their leases within broker.lease", len(live))
    active = _gauge("taskkit_worker_active_tasks", "Tasks running on a worker", labels=("worker",))
    pool = _gauge("taskkit_worker_pool_processes", "Pool processes of a worker", labels=("worker",))
    consumers: dict[str, int] = {}
    for worker, status in sorted(live.items()):
        active.add_metric([worker], status.get("active") or 0)
        if status.get("pool") is not None:
            pool.add_metric([worker], status["pool"])
        for queue in status.get("queues") or ():
            consumers[queue] = consumers.get(queue, 0) + 1
    yield active
    yield pool
    family = _gauge("taskkit_queue_consumers", "Live workers consuming a queue", labels=("queue",))
    for queue, n in sorted(consumers.items()):
        family.add_metric([queue], n)
    yield family


def _beat(b: dict[str, Any]) -> Iterator[Metric]:
    now = time.time()
    age = None if b["tick"] is None else max(0.0, now - b["tick"])
    yield _gauge(
        "taskkit_beat_up",
        "1 if a beat held the lock and ticked within beat.lock_timeout",
        int(age is not None and age <= b["lock_timeout"]),
    )
    if age is not None:
        yield _gauge("taskkit_beat_tick_age_seconds", "Seconds since the active beat's last tick", age)
    if b["holder"]:
        holder = _gauge("taskkit_beat_active_info", "The beat instance (host:pid) that ticked last", labels=("instance",))
        holder.add_metric([b["holder"]], 1)
        yield holder
    yield _gauge("taskkit_schedules", "Schedules in Redis (declared and runtime, enabled or not)", b["schedules"])
    overdue = 0.0 if b["overdue_since"] is None else max(0.0, now - b["overdue_since"])
    yield _gauge("taskkit_schedule_overdue_seconds", "How long the most overdue schedule has been due (0: none)", overdue)


def _redis(info: dict[str, Any], latency: float) -> Iterator[Metric]:
    yield _gauge("taskkit_redis_latency_seconds", "Round trip of one PING", latency)
    for field, name, doc in (
        ("used_memory", "taskkit_redis_memory_used_bytes", "Memory Redis uses"),
        ("maxmemory", "taskkit_redis_memory_max_bytes", "Redis maxmemory (0: no limit)"),
        ("connected_clients", "taskkit_redis_connected_clients", "Clients connected to Redis"),
        ("aof_enabled", "taskkit_redis_aof_enabled", "1 if Redis appends to its AOF"),
    ):
        if field in info:
            yield _gauge(name, doc, float(info[field]))
    if "evicted_keys" in info:
        yield CounterMetricFamily("taskkit_redis_evicted_keys", "Keys Redis evicted under memory pressure", value=info["evicted_keys"])
    if "aof_last_write_status" in info:
        yield _gauge("taskkit_redis_aof_last_write_ok", "1 if Redis' last AOF write succeeded", int(info["aof_last_write_status"] == "ok"))


def _recorder(stats: dict[str, int]) -> Iterator[Metric]:
    for field, name, doc in (
        ("written", "taskkit_recorder_events_written", "Run-history events written"),
        ("failed", "taskkit_recorder_write_failures", "Run-history batch writes that failed (retried later)"),
        ("dropped", "taskkit_recorder_events_dropped", "Run-history events given up while Redis was unreachable"),
    ):
        yield CounterMetricFamily(name, doc, value=stats[field])


# ---------------------------------------------------------------- exposition and HTTP


def registry(app: TaskkitApp | None = None, **kwargs: Any) -> CollectorRegistry:
    """A registry holding only the taskkit collector (what `metrics serve` exposes)."""
    reg = CollectorRegistry()
    reg.register(Collector(app, **kwargs))
    return reg


def exposition(app: TaskkitApp | None = None, **kwargs: Any) -> str:
    """One scrape in Prometheus' text format (`taskkit metrics show`)."""
    return generate_latest(registry(app, **kwargs)).decode()


class Auth:
    """Who may scrape: a bearer token and/or basic-auth credentials, compared in constant time."""

    def __init__(self, token: str = "", basic: str = "") -> None:
        self.token = token.encode()
        self.basic = basic.encode()

    @classmethod
    def from_settings(cls, app: TaskkitApp, env: dict[str, str] | None = None) -> Auth:
        env = dict(os.environ) if env is None else env
        token = env.get(TOKEN_ENV, "")
        path = app.settings.metrics.token_file
        if path and not token:
            try:
                with open(path) as fh:
                    token = fh.read().strip()
            except OSError as exc:
                raise ConfigError("metrics.token_file", path, f"a readable file holding the token ({exc.strerror})") from None
            if not token:
                raise ConfigError("metrics.token_file", path, "a file holding the token (it is empty)")
        return cls(token, env.get(BASIC_ENV, ""))

    @property
    def configured(self) -> bool:
        return bool(self.token or self.basic)

    def allows(self, header: str) -> bool:
        scheme, _, given = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token:
            return hmac.compare_digest(given.strip().encode(), self.token)
        if scheme == "basic" and self.basic:
            try:
                decoded = base64.b64decode(given.strip(), validate=True)
            except ValueError:
                return False
            return hmac.compare_digest(decoded, self.basic)
        return False


def wsgi_app(app: TaskkitApp | None = None, *, auth: Auth | None) -> Callable[..., Any]:
    """The endpoint: `/metrics` behind auth (None: no auth at all)."""
    metrics = make_wsgi_app(registry(app))

    def endpoint(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if auth is not None and not auth.allows(environ.get("HTTP_AUTHORIZATION", "")):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="taskkit"')])
            return [b"401: send the metrics token (Authorization: Bearer ...)\n"]
        return metrics(environ, start_response)

    return endpoint


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # no access log on stderr
        pass


def serve(bind: str, *, app: TaskkitApp | None = None, auth: Auth | None, ready: Callable[[str], None] | None = None) -> None:
    """Serve /metrics on host:port until interrupted."""
    host, _, port = bind.rpartition(":")
    try:
        server = make_server(host.strip("[]"), int(port), wsgi_app(app, auth=auth), server_class=_Server, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError("metrics.bind", bind, f"an address this host can listen on ({exc.strerror})") from None
    with server:
        if ready:
            ready(f"http://{host}:{server.server_port}/metrics")
        server.serve_forever()
