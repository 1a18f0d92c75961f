"""The beat scheduler: one active beat, batched ticks, fenced writes (celery-redbeat underneath).

`Scheduler` is what `celery -A taskkit.app beat` runs (`beat_scheduler`). Per tick it reads
the due entries in two pipelines and advances all of them with one fenced script: each write
checks the lock token and that the entry is unchanged since it was read. A run is recorded
before it is sent, so a beat killed in between loses that one run instead of a standby
sending it a second time; a warm stop (SIGTERM, SIGINT) waits for the batch it interrupts to
be sent, so it loses none. Schedules themselves (the API, their stored form) live in
`taskkit.schedules`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from celery.schedules import maybe_schedule
from redbeat.schedulers import RedBeatScheduler, RedBeatSchedulerEntry

from . import schedule_store as store
from .broker import REDIS_ERRORS, redbeat_redis
from .errors import ScheduleError, TaskkitError
from .keys import RedBeatKeys, redbeat_keys
from .schedule_spec import ScheduleSpec
from .schedule_store import HEADER_DUE, HEADER_SCHEDULE
from .schedules import check_sendable

log = logging.getLogger(__name__)

DUE_BATCH = 500  # due entries one tick reads and sends at most; more wait for an immediate next tick
REDIS_RETRY = 1.0  # seconds beat waits before trying an unreachable Redis again

# Extend the lock if this beat still holds it, and say who ticked when (for the metrics).
# KEYS: lock, beat status; ARGV: token, ttl ms, this beat (host:pid), now.
_FENCE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('hset', KEYS[2], 'holder', ARGV[3], 'tick', ARGV[4])
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

# Record the runs of due entries, only while this beat holds the lock and only for entries
# unchanged since beat read them (an edit or delete in between wins; beat reads again).
# KEYS: lock, due-time zset, entry hashes. ARGV: token, ttl ms, then per entry: definition
# and meta as read ('' = none), new meta ('' = keep), new score (< 0: not scheduled).
# Returns the 1-based positions of the entries written, or nil when the lock is lost.
_RESERVE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return false end
redis.call('pexpire', KEYS[1], ARGV[2])
local done = {}
for i = 3, #KEYS do
  local a = (i - 3) * 4 + 3
  local definition = redis.call('hget', KEYS[i], 'definition') or ''
  local meta = redis.call('hget', KEYS[i], 'meta') or ''
  if definition == ARGV[a] and meta == ARGV[a + 1] then
    if definition == '' then
      redis.call('zrem', KEYS[2], KEYS[i])
    else
      if ARGV[a + 2] ~= '' then redis.call('hset', KEYS[i], 'meta', ARGV[a + 2]) end
      redis.call('zadd', KEYS[2], ARGV[a + 3], KEYS[i])
    end
    done[#done + 1] = i - 2
  end
end
return done
"""


class Entry(RedBeatSchedulerEntry):
    """redbeat's entry that also reads zoned crontabs; `due_at` is the time beat fired it for."""

    due_at = None  # taskkit keeps due times in redbeat's sorted set; this shadows redbeat's estimate

    @staticmethod
    def decode_definition(definition: str) -> dict[str, Any]:
        return json.loads(definition, cls=store.Decoder)


class Scheduler(RedBeatScheduler):
    """The beat scheduler (`beat_scheduler`): one active beat, batched ticks, fenced writes.

    redbeat's beat_init hook takes the lock (a standby blocks there). A beat that finds its
    lock gone (it stalled past the lock timeout and a standby took over) stops sending and
    stands by until it can take the lock again. Declared schedules are synced by whichever
    beat becomes active, so two beats never write them at once.
    """

    Entry = Entry

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.keys: RedBeatKeys = redbeat_keys(app)
        self._client = redbeat_redis(app)
        self._reserve = self._client.register_script(_RESERVE)
        self._synced = False
        self.instance = f"{socket.gethostname()}:{os.getpid()}"

    def setup_schedule(self) -> None:
        # Every beat checks the declared schedules at start, before it takes the lock, so a
        # bad taskkit.toml stops the standby too; only the active beat writes them (tick).
        for name, entry in (self.app.conf.beat_schedule or {}).items():
            try:
                spec = ScheduleSpec(
                    task=entry["task"], args=tuple(entry.get("args") or ()), kwargs=entry.get("kwargs") or {}, **_options(entry)
                )
                check_sendable(self.app, name, spec)
            except TaskkitError as exc:
                raise ScheduleError(name, "task", entry.get("task"), f"a task it can send ({exc})") from None
        self.app.finalize()  # now, not inside the first send (it costs ~100 ms)

    @property
    def _ttl_ms(self) -> int:
        return int(self.lock_timeout * 1000)

    def tick(self, **_: Any) -> float:
        try:
            return self._tick(time.time())
        except REDIS_ERRORS as exc:
            log.warning("beat: Redis unavailable (%s); trying again in %gs", exc, REDIS_RETRY)
            return min(self.max_interval, REDIS_RETRY)

    def _tick(self, now: float) -> float:
        if not self._synced:  # just started, or lost the lock earlier
            if not self._take_lock():
                return self.max_interval
            self._sync_declared()
            self._synced = True
        k = self.keys
        with self._client.pipeline(transaction=False) as pipe:
            # EVAL: no SCRIPT EXISTS round trip
            pipe.eval(_FENCE, 2, self.lock_key, self.app.keys.beat_status(), self.lock.local.token, self._ttl_ms, self.instance, now)
            pipe.zrangebyscore(k.schedule, 0, now, start=0, num=DUE_BATCH, withscores=True)
            pipe.zrangebyscore(k.schedule, f"({now!r}", "+inf", start=0, num=1, withscores=True)
            held, due, after = pipe.execute()
        if not held:
            return self._stand_by()
        wake = after[0][1] if after else now + self.max_interval
        if due:
            wake = min(wake, self._send_due(due, now))
            if len(due) == DUE_BATCH:
                return 0.0
        return max(0.0, min(wake - time.time(), self.max_interval))  # from now: the tick took time too

    def _take_lock(self) -> bool:
        if self.lock is None:  # redbeat's beat_init hook could not reach Redis
            self.lock = self._client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
        if self.lock.local.token is not None and self.lock.owned():
            return True
        if self.lock.acquire(blocking=False):
            log.info("beat: Acquired lock")
            return True
        return False

    def _stand_by(self) -> float:
        log.warning("beat: lost the lock %s to another beat (stalled past %gs?); standing by", self.lock_key, self.lock_timeout)
        self._synced = False
        return self.max_interval

    def _send_due(self, due: list[tuple[str, float]], now: float) -> float:
        """Record and send the due entries; returns the earliest next due time among them."""
        with self._client.pipeline(transaction=False) as pipe:
            for key, _ in due:
                pipe.hmget(key, "definition", "meta")
            stored = pipe.execute()
        now_dt = datetime.fromtimestamp(now, UTC)
        plan: list[Any] = []
        entries: list[Entry | None] = []
        for (key, score), (definition, meta) in zip(due, stored, strict=True):
            entry, new_meta, new_score = None, "", -1.0
            if definition is not None:
                try:
                    entry, new_meta, new_score = self._advance(key, definition, meta, score, now_dt)
                except Exception:  # one unreadable entry must not stop the others
                    log.exception("beat: cannot read schedule %s; unscheduling it (`taskkit schedules show` it)", key)
            plan += [definition or "", meta or "", new_meta, new_score]
            entries.append(entry)
        with _stops_held():  # recorded runs are sent before a warm stop takes effect
            done = self._reserve(
                keys=[self.lock_key, self.keys.schedule, *(key for key, _ in due)], args=[self.lock.local.token, self._ttl_ms, *plan]
            )
            if done is None:
                self._stand_by()
                return now + self.max_interval
            for i in done:
                entry = entries[i - 1]
                if entry is not None:
                    self.apply_entry(entry, producer=self.producer)  # Celery's: logs, sends, logs a failure
        scores = [plan[(i - 1) * 4 + 3] for i in done]
        return min((s for s in scores if s >= 0), default=now + self.max_interval)

    def _advance(self, key: str, definition: str, meta: str | None, score: float, now: datetime) -> tuple[Entry | None, str, float]:
        d = store.decode_definition(definition, self.app)
        if not d["enabled"]:
            return None, "", -1.0
        m = store.decode_meta(meta)
        due = datetime.fromtimestamp(score, UTC)
        name = self.keys.name(key)
        options = dict(d.get("options") or {})
        options["headers"] = {**options.get("headers", {}), HEADER_SCHEDULE: name, HEADER_DUE: due.isoformat()}
        count = m["total_run_count"] + 1
        entry = self.Entry(
            name=name, task=d["task"], schedule=d["schedule"], args=d.get("args"), kwargs=d.get("kwargs"), options=options, app=self.app
        )
        entry.last_run_at, entry.total_run_count, entry.due_at = now, count, due
        return entry, store.meta(now, count), store.due_score(store.next_after(d["schedule"], now, anchor=due))

    def _sync_declared(self) -> None:
        """Make Redis hold exactly the declared schedules: add, change, remove. Runtime ones stay."""
        k, r = self.keys, self._client
        now = datetime.now(UTC)
        wanted = {}
        for name, entry in (self.app.conf.beat_schedule or {}).items():
            sched = maybe_schedule(entry["schedule"], app=self.app)
            options = entry.get("options") or {}
            wanted[name] = (
                sched,
                entry.get("enabled", True),
                store.definition(name, entry["task"], sched, entry.get("args"), entry.get("kwargs"), options, entry.get("enabled", True)),
            )
        previous = r.smembers(k.statics)
        with r.pipeline(transaction=False) as pipe:
            for name in wanted:
                pipe.hmget(k.entry(name), "definition", "meta")
            stored = dict(zip(wanted, pipe.execute(), strict=True))
        removed = previous - wanted.keys()
        changed = [name for name, (_, _, definition) in wanted.items() if stored[name][0] != definition]
        with r.pipeline(transaction=True) as tx:
            for name in removed:
                tx.delete(k.entry(name))
                tx.zrem(k.schedule, k.entry(name))
            if removed:
                tx.srem(k.statics, *removed)
            for name in changed:
                sched, enabled, definition = wanted[name]
                nxt = store.next_after(sched, now, anchor=store.decode_meta(stored[name][1])["last_run_at"]) if enabled else None
                if enabled and nxt is None:
                    log.warning("beat: declared schedule %s has no time left to run (a one-off in the past)", name)
                tx.hset(k.entry(name), "definition", definition)
                tx.hsetnx(k.entry(name), "meta", store.meta(None, 0))
                tx.zadd(k.schedule, {k.entry(name): store.due_score(nxt)})
            if wanted:
                tx.sadd(k.statics, *wanted)
            tx.execute()
        log.info(
            "beat: declared schedules synced: %d added or changed, %d removed, %d unchanged",
            len(changed),
            len(removed),
            len(wanted) - len(changed),
        )


@contextmanager
def _stops_held() -> Iterator[None]:
    """Delay SIGTERM and SIGINT until the block ends.

    Celery's beat handles both by raising SystemExit wherever the main thread is; between
    recording a run and sending it, that would lose the run. A signal that arrives meanwhile
    stays pending and takes effect on leaving the block. Off the main thread (beat embedded
    in a worker) signals go to the main thread anyway, so nothing is held.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGTERM, signal.SIGINT}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _options(entry: Mapping[str, Any]) -> dict[str, Any]:
    options = entry.get("options") or {}
    return {k: options[k] for k in ("queue", "priority") if k in options}
