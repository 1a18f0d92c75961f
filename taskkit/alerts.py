"""Health thresholds (`[alerts]`), evaluated against Redis, each transition recorded once.

`evaluate()` reads, in two or three pipelined round trips, what the rules need — queue
counts, live consumers (worker leases), the oldest waiting message of each queue, runs that
ended and failed per minute (the recorder's tallies), new dead letters, beat's last tick,
Redis memory — and returns the alerts firing now. `check()` also records transitions: one
script compares them with the active set (a hash), so whichever process evaluates, an
alert that starts firing or resolves is written once to the alerts stream (bounded by
`alerts.keep`), and then POSTed to `alerts.webhook` if set (bounded retries; a failing
webhook is logged, never raised). `taskkit health`, the `taskkit.ops.health` task and the
metrics' Prometheus rules (monitoring/alerts.yml) use the same thresholds.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from . import queues
from .app import TaskkitApp, get_app
from .broker import Read, read, redis_client
from .capture.receivers import SENT_HEADER
from .keys import redbeat_keys
from .leases import presence_read

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = 2.0  # seconds per attempt
WEBHOOK_RETRIES = (0.5, 1.0)  # seconds to wait before the second and third attempt

RULES = ("backlog", "oldest_waiting", "no_consumer", "failure_rate", "deadletters", "beat_silent", "redis_memory")


@dataclass(frozen=True)
class Alert:
    rule: str  # one of RULES
    subject: str  # the queue, or "all"
    value: float
    threshold: float
    message: str

    @property
    def key(self) -> str:
        return f"{self.rule}:{self.subject}"


# Record transitions once: a firing alert not yet active is added and logged; an active one
# no longer firing is removed and logged. KEYS: active hash, stream. ARGV: now, keep, then
# per firing alert: key, JSON. Returns {state, key, JSON} per transition.
_TRANSITIONS = """
local firing, out = {}, {}
for i = 3, #ARGV, 2 do
  firing[ARGV[i]] = true
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'state', 'firing', 'key', ARGV[i], 'alert', ARGV[i + 1], 'at', ARGV[1])
    out[#out + 1] = {'firing', ARGV[i], ARGV[i + 1]}
  end
end
for _, key in ipairs(redis.call('HKEYS', KEYS[1])) do
  if not firing[key] then
    local was = redis.call('HGET', KEYS[1], key)
    redis.call('HDEL', KEYS[1], key)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'state', 'resolved', 'key', key, 'alert', was, 'at', ARGV[1])
    out[#out + 1] = {'resolved', key, was}
  end
end
return out
"""

# New dead letters since ARGV[1] over every queue that has any. KEYS: the set of those queues; ARGV: since, zset prefix.
_NEW_LETTERS = """
local n = 0
for _, queue in ipairs(redis.call('SMEMBERS', KEYS[1])) do n = n + redis.call('ZCOUNT', ARGV[2] .. queue, ARGV[1], '+inf') end
return n
"""


def _state_read(app: TaskkitApp, now: float) -> Read[dict[str, Any]]:
    k, a = app.keys, app.settings.alerts
    minutes = range(int((now - a.window) // 60), int(now // 60) + 1)

    def enqueue(pipe: Any) -> None:
        pipe.hget(k.beat_status(), "tick")
        pipe.zcard(redbeat_keys(app).schedule)
        pipe.info("memory")
        pipe.eval(_NEW_LETTERS, 1, k.deadletter_queues(), now - a.window, k.deadletter_queue(""))
        for m in minutes:
            pipe.hmget(k.minute(m), "ended", "failed")

    def parse(replies: list[Any]) -> dict[str, Any]:
        tick, schedules, memory, letters, *per_minute = replies
        return {
            "tick": float(tick) if tick else None,
            "schedules": schedules,
            "memory": memory,
            "new_letters": int(letters),
            "ended": sum(int(e or 0) for e, _ in per_minute),
            "failed": sum(int(f or 0) for _, f in per_minute),
        }

    return Read(enqueue, parse)


def evaluate(*, app: TaskkitApp | None = None) -> list[Alert]:
    """The alerts firing now (nothing is written)."""
    app = app or get_app()
    a, now = app.settings.alerts, time.time()
    rows, live, state = read(app, queues.counts_read(app, unacked=False), presence_read(app), _state_read(app, now))
    rows = [r for r in rows if r.declared]
    consumed = {q for status in live.values() for q in status.get("queues") or ()}
    out: list[Alert] = []
    for r in rows:
        if a.backlog and r.waiting >= a.backlog:
            out.append(
                Alert("backlog", r.name, r.waiting, a.backlog, f"queue {r.name}: {r.waiting:,} messages waiting (threshold {a.backlog:,})")
            )
        if a.no_consumer and r.waiting and r.name not in consumed:
            out.append(
                Alert("no_consumer", r.name, r.waiting, 0, f"queue {r.name}: {r.waiting:,} messages waiting and no live worker consumes it")
            )
    if a.oldest_waiting:
        for name, age in oldest_waiting(app, rows, now).items():
            if age >= a.oldest_waiting:
                out.append(Alert("oldest_waiting", name, round(age, 1), a.oldest_waiting,
                                 f"queue {name}: the oldest waiting message has waited {age:,.0f}s (threshold {a.oldest_waiting:g}s)"))  # fmt: skip
    ended, failed = state["ended"], state["failed"]
    if a.failure_rate and ended >= max(a.min_runs, 1) and failed / ended >= a.failure_rate:
        out.append(Alert("failure_rate", "all", round(failed / ended, 4), a.failure_rate,
                         f"{failed / ended:.0%} of the {ended:,} runs that ended in the last {a.window:g}s failed (threshold {a.failure_rate:.0%})"))  # fmt: skip
    if a.deadletters and state["new_letters"] >= a.deadletters:
        n = state["new_letters"]
        out.append(
            Alert("deadletters", "all", n, a.deadletters, f"{n:,} new dead letters in the last {a.window:g}s (threshold {a.deadletters:,})")
        )
    if a.beat_silent and state["schedules"]:
        age = None if state["tick"] is None else now - state["tick"]
        if age is None or age >= a.beat_silent:
            said = "no beat has ticked" if age is None else f"no beat tick for {age:,.0f}s"
            out.append(Alert("beat_silent", "all", -1 if age is None else round(age, 1), a.beat_silent,
                             f"{said} while {state['schedules']} schedules exist (threshold {a.beat_silent:g}s)"))  # fmt: skip
    used, limit = state["memory"].get("used_memory", 0), state["memory"].get("maxmemory", 0)
    if a.redis_memory and limit and used / limit >= a.redis_memory:
        out.append(Alert("redis_memory", "all", round(used / limit, 4), a.redis_memory,
                         f"Redis uses {used / limit:.0%} of maxmemory ({used:,} of {limit:,} bytes; threshold {a.redis_memory:.0%})"))  # fmt: skip
    return out


def oldest_waiting(app: TaskkitApp, rows: list[queues.QueueInfo], now: float) -> dict[str, float]:
    """Seconds the oldest waiting message of each queue has waited (queues with messages sent by taskkit)."""
    levels = [(r.name, app.keys.queue(r.name, p)) for r in rows for p, n in (r.levels or {}).items() if n]
    if not levels:
        return {}
    with redis_client(app) as client, client.pipeline(transaction=False) as pipe:
        for _, key in levels:
            pipe.lindex(key, -1)  # kombu pushes on the left and pops on the right: the oldest is last
        raws = pipe.execute()
    out: dict[str, float] = {}
    for (name, _), raw in zip(levels, raws, strict=True):
        try:
            sent = json.loads(raw)["headers"].get(SENT_HEADER)
        except (TypeError, ValueError, KeyError, AttributeError):
            continue
        if isinstance(sent, (int, float)):
            out[name] = max(out.get(name, 0.0), now - sent)
    return out


def check(*, app: TaskkitApp | None = None) -> dict[str, Any]:
    """Evaluate, record transitions once (and POST them to the webhook); returns firing, fired, resolved."""
    app = app or get_app()
    firing = evaluate(app=app)
    now = time.time()
    argv: list[Any] = [now, app.settings.alerts.keep]
    for alert in firing:
        argv += (alert.key, json.dumps({**asdict(alert), "since": now}))
    with redis_client(app) as client:
        changes = client.eval(_TRANSITIONS, 2, app.keys.alerts_active(), app.keys.alerts_stream(), *argv)
    transitions = [{"state": s.decode(), "key": k.decode(), **json.loads(v)} for s, k, v in changes]
    for t in transitions:
        log.warning("taskkit alert %s: %s", t["state"], t["message"])
    if app.settings.alerts.webhook:
        for t in transitions:
            post(app.settings.alerts.webhook, t)
    return {
        "firing": [asdict(a) for a in firing],
        "fired": [t for t in transitions if t["state"] == "firing"],
        "resolved": [t for t in transitions if t["state"] == "resolved"],
    }


def active(*, app: TaskkitApp | None = None) -> list[dict[str, Any]]:
    """The alerts active now (as the last check() left them), oldest first."""
    app = app or get_app()
    return read(app, active_read(app))[0]


def active_read(app: TaskkitApp) -> Read[list[dict[str, Any]]]:
    """active(), for a shared pipeline (the snapshot ClusterView shows)."""
    key = app.keys.alerts_active()
    return Read(lambda pipe: pipe.hgetall(key), lambda r: sorted((json.loads(v) for v in r[0].values()), key=lambda a: a["since"]))


def recent(*, limit: int = 50, app: TaskkitApp | None = None) -> list[dict[str, Any]]:
    """The last `limit` transitions, newest first."""
    app = app or get_app()
    with redis_client(app) as client:
        entries = client.xrevrange(app.keys.alerts_stream(), count=limit)
    return [{"state": f[b"state"].decode(), "at": float(f[b"at"]), **json.loads(f[b"alert"])} for _, f in entries]


def post(url: str, transition: dict[str, Any]) -> bool:
    """POST one transition as JSON; retried with backoff; False (and a log line) if every attempt failed."""
    body = json.dumps(transition).encode()
    for attempt, pause in enumerate((0.0, *WEBHOOK_RETRIES), start=1):
        time.sleep(pause)
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
                if response.status < 300:
                    return True
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = exc
        else:
            error = f"HTTP {response.status}"
        if attempt == 1 + len(WEBHOOK_RETRIES):
            host = urlsplit(url).hostname  # never the path or query: they may carry a token
            log.warning("taskkit alerts: webhook on %s failed %d times (%s); the alert stays recorded", host, attempt, error)
    return False
