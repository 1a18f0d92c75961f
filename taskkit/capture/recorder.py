"""Run history, write side: lifecycle events → an in-memory buffer → the stream, batched off the task's path.

Every process that publishes or runs tasks (a client, the worker's main process, each
pool child) records events into a buffer; a daemon thread writes it with one script call
per batch (at most one round trip per event, usually far fewer). A Redis hiccup is logged
and counted, never raised into a task. Events still buffered when a process is SIGKILLed
(milliseconds' worth) are lost; everything else is flushed at exit and at worker shutdown.

The recorders' counters (events written, failed writes, events dropped) are summed in one
hash under the key prefix, updated by the same script call as the batch, so an exporter or
a notebook reads them from outside the process (`recorder_stats`). So are the task tallies
the metrics exporter serves (`tallies`).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter, deque
from typing import Any

from kombu.utils.json import dumps as kombu_dumps

from ..broker import Read, redis_client
from ..errors import UnknownRun
from . import rows, tallies

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.05  # seconds between writes while events keep coming
BATCH = 2000  # events per script call
BUFFER_CAP = 100_000  # events kept while Redis is unreachable; older ones are dropped and counted
TRIM_EVERY = 50  # batches between age trims (MINID)
WARN_EVERY = 30.0  # seconds between warnings while Redis stays unreachable
STATS = ("written", "failed", "dropped")  # fields of the counters hash

# XADD every row (MAXLEN ~ caps the length), remember where each run's arguments are
# (for rerun), add to the counters and the tallies, and now and then drop events older than
# max_age (MINID ~). KEYS: stream, counters, tallies. ARGV: max_events, minid, index ttl,
# index prefix, failed, dropped, rows, tally counts, tally sums, minute prefix, minute ttl;
# then per event: row, task id to index ('' = none); per tally count: field, n; per tally
# sum: field, seconds; then per minute count: minute, field, n.
_WRITE = """
local rows_end = 11 + 2 * tonumber(ARGV[7])
local counts_end = rows_end + 2 * tonumber(ARGV[8])
local sums_end = counts_end + 2 * tonumber(ARGV[9])
for i = 12, rows_end, 2 do
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'v', ARGV[i])
  if ARGV[i + 1] ~= '' then
    redis.call('SET', ARGV[4] .. ARGV[i + 1], id, 'NX', 'EX', ARGV[3])
  end
end
for i = rows_end + 1, counts_end, 2 do redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1]) end
for i = counts_end + 1, sums_end, 2 do redis.call('HINCRBYFLOAT', KEYS[3], ARGV[i], ARGV[i + 1]) end
for i = sums_end + 1, #ARGV, 3 do
  local key = ARGV[10] .. ARGV[i]
  redis.call('HINCRBY', key, ARGV[i + 1], ARGV[i + 2])
  redis.call('EXPIRE', key, ARGV[11])
end
redis.call('HINCRBY', KEYS[2], 'written', ARGV[7])
if ARGV[5] ~= '0' then redis.call('HINCRBY', KEYS[2], 'failed', ARGV[5]) end
if ARGV[6] ~= '0' then redis.call('HINCRBY', KEYS[2], 'dropped', ARGV[6]) end
if ARGV[2] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[2]) end
return #ARGV
"""
NO_TALLY: tuple[Any, ...] = ((), (), ())


class Recorder:
    """Buffers events of one app in this process and writes them in batches."""

    def __init__(self, app: Any) -> None:
        self.app = app
        h = app.settings.history
        self.max_value_bytes, self.max_events, self.max_age = h.max_value_bytes, h.max_events, h.max_age
        self.stream = app.keys.runs()
        self.stats_key = app.keys.recorder_stats()
        self.tallies_key = app.keys.tallies()
        self.minute_prefix = app.keys.minute("")
        self.index_prefix = app.keys.run_index("")
        self.buffer: deque[tuple[str, str, Any]] = deque()  # row, task id to index, tally
        self.wake = threading.Event()
        self.lock = threading.Lock()  # one flush at a time (the thread, exit, shutdown)
        self.pid = 0
        self.errors = 0  # failed writes, in this process
        self.dropped = 0  # events given up while Redis was unreachable, in this process
        self._unreported = [0, 0]  # failed writes, dropped events not yet added to the counters hash
        self.batches = 0
        self.warned_at = -WARN_EVERY
        self._script: Any = None

    # ------------------------------------------------------------ recording

    def record(
        self,
        event: str,
        *,
        args: Any = None,
        kwargs: Any = None,
        index: bool = False,
        ts: float | None = None,
        tally: Any = NO_TALLY,
        encoded: tuple[str, str] | None = None,
        **fields: Any,
    ) -> None:
        """Buffer one event; `tally` is what it adds to the task tallies (capture.tallies.fields);
        `encoded` is the args and kwargs as JSON already (submit_many encodes them once)."""
        if encoded is None and (args is not None or kwargs is not None):
            encoded = kombu_dumps(args or []), kombu_dumps(kwargs or {})
        if encoded is not None:
            fields["args"], args_cut = rows.cut_text(encoded[0], self.max_value_bytes)
            fields["kwargs"], kwargs_cut = rows.cut_text(encoded[1], self.max_value_bytes)
            fields["cut"] = ",".join(n for n, c in (("args", args_cut), ("kwargs", kwargs_cut)) if c)
        fields.update(event=event, ts=repr(time.time() if ts is None else ts))
        row = rows.pack(fields)
        self._start()
        self.buffer.append((row, fields["id"] if index else "", tally))
        if len(self.buffer) >= BATCH:
            self.wake.set()

    def _start(self) -> None:
        if self.pid != os.getpid():  # first event in this process, or a fresh fork
            self.pid = os.getpid()
            # A fork inherits the parent's buffer (the parent writes it) and maybe a held lock.
            self.buffer.clear()
            self._unreported = [0, 0]  # the parent reports its own failures
            self.lock, self.wake = threading.Lock(), threading.Event()
            threading.Thread(target=self._run, name="taskkit-recorder", daemon=True).start()

    def _run(self) -> None:
        while True:
            self.wake.wait(FLUSH_INTERVAL)
            self.wake.clear()
            if self.buffer:
                self.flush()

    def flush(self) -> None:
        """Write everything buffered; on failure keep it for the next try (bounded)."""
        with self.lock:
            while self.buffer:
                batch = [self.buffer.popleft() for _ in range(min(BATCH, len(self.buffer)))]
                try:
                    self._write(batch)
                except Exception as exc:  # never raise into a task: count, log, keep for later
                    self.errors += 1
                    self._unreported[0] += 1
                    self.buffer.extendleft(reversed(batch))
                    while len(self.buffer) > BUFFER_CAP:
                        self.buffer.pop()
                        self.dropped += 1
                        self._unreported[1] += 1
                    if time.monotonic() - self.warned_at > WARN_EVERY:
                        self.warned_at = time.monotonic()
                        log.warning("taskkit: run history not written (%s); %d events buffered", exc, len(self.buffer))
                    return

    def _write(self, batch: list[tuple[str, str, Any]]) -> None:
        self.batches += 1
        minid = ""
        if self.batches % TRIM_EVERY == 1:
            minid = str(int((time.time() - self.max_age) * 1000))
        failed, dropped = self._unreported
        counts: Counter[str] = Counter()
        sums: Counter[str] = Counter()
        minutes: Counter[tuple[int, str]] = Counter()
        rows_argv: list[Any] = []
        for row, index_id, (tally_counts, tally_sums, tally_minutes) in batch:
            rows_argv += (row, index_id)
            counts.update(tally_counts)
            minutes.update(tally_minutes)
            for name, seconds in tally_sums:
                sums[name] += seconds
        argv: list[Any] = [self.max_events, minid, max(int(self.max_age), 1), self.index_prefix, failed, dropped]
        argv += [len(batch), len(counts), len(sums), self.minute_prefix, tallies.MINUTE_TTL, *rows_argv]
        for name, n in counts.items():
            argv += (name, n)
        for name, seconds in sums.items():
            argv += (name, repr(seconds))
        for (minute, name), n in minutes.items():
            argv += (minute, name, n)
        with redis_client(self.app) as client:
            if self._script is None:
                self._script = client.register_script(_WRITE)
            self._script(keys=[self.stream, self.stats_key, self.tallies_key], args=argv, client=client)
        self._unreported = [0, 0]


def recorder_for(app: Any) -> Recorder | None:
    """The app's recorder, or None for a non-taskkit app or history.enabled = false."""
    rec = app.__dict__.get("_taskkit_recorder", False)
    if rec is False:
        settings = getattr(app, "settings", None)
        rec = Recorder(app) if settings is not None and settings.history.enabled and not settings.eager else None
        app._taskkit_recorder = rec
        if rec is not None:
            atexit.register(rec.flush)
    return rec


# ------------------------------------------------------------ reading back what was written


def recorded_call(app: Any, task_id: str) -> dict[str, Any]:
    """The task, args, kwargs (JSON text), cut marks, queue and priority a run was sent with."""
    with redis_client(app) as client:
        stream_id = client.get(app.keys.run_index(task_id))
        entry = client.xrange(app.keys.runs(), stream_id, stream_id) if stream_id else []
    if not entry:
        raise UnknownRun(task_id)
    row = rows.unpack(entry[0][1][rows.FIELD.encode()])
    return {
        "task": row["task"], "args": row["args"], "kwargs": row["kwargs"], "cut": row["cut"].split(",") if row["cut"] else [],
        "queue": row["queue"] or None, "priority": int(row["priority"]) if row["priority"] else None,
    }  # fmt: skip


def stats_read(app: Any) -> Read[dict[str, int]]:
    """The recorders' counters summed over every process since the history began, for a shared pipeline."""

    def parse(replies: list[Any]) -> dict[str, int]:
        return {name: int(replies[0].get(name.encode(), 0)) for name in STATS}

    return Read(lambda pipe: pipe.hgetall(app.keys.recorder_stats()), parse)
