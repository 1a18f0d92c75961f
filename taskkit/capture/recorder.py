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
STATS = ("written", "failed", "dropped")  # fields of the counters hash (and "held": events in the stream now)
INDEXED = ("sent", "received")  # the events that carry a run's arguments, indexed for rerun

# One entry per batch (rows.COUNT, rows.BLOCK), remember where each run's arguments are (for
# rerun), add to the counters and the tallies, and keep the stream to about max_events events
# and max_age (given now and then). The batch entries are listed oldest first with their row
# counts (KEYS[4], "id n"), so trimming knows how many events an entry holds without reading
# it; every other entry holds one row (the first layout: a stream begun before batching, or an
# old writer during a rolling upgrade). Whole entries only, oldest first: never fewer than
# max_events, at most one batch more. The counters hash keeps `listed` (the events of the
# listed entries), counted again when it is missing or the list names entries that are gone
# (the stream deleted or trimmed by hand), and `held`, the events in the stream after the
# write (`listed` plus one for every entry not listed). KEYS: stream, counters,
# tallies, entry list. ARGV: max_events, minid (ms, '' = no age trim), index ttl, index prefix,
# failed, dropped, rows, tally counts, tally sums, minute prefix, minute ttl, block, indexed;
# then the task ids to index; per tally count: field, n; per tally sum: field, seconds; per
# minute count: minute, field, n.
_WRITE = """
local n, max, minid = tonumber(ARGV[7]), tonumber(ARGV[1]), ARGV[2]
local index_end = 13 + tonumber(ARGV[13])
local counts_end = index_end + 2 * tonumber(ARGV[8])
local sums_end = counts_end + 2 * tonumber(ARGV[9])
local function ms(id) return tonumber(string.match(id, '^(%d+)')) end
local function after(id)
  local m, seq = string.match(id, '^(%d+)-(%d+)$')
  return m .. '-' .. (tonumber(seq) + 1)
end
local function head()
  local h = redis.call('LINDEX', KEYS[4], 0)
  if not h then return nil, 0 end
  local id, c = string.match(h, '^(%S+) (%d+)$')
  return id, tonumber(c)
end
if redis.call('XLEN', KEYS[1]) < redis.call('LLEN', KEYS[4]) or redis.call('HEXISTS', KEYS[2], 'listed') == 0 then
  while true do  -- entries of the list that are gone from the stream: the oldest ones
    local id = head()
    if not id or #redis.call('XRANGE', KEYS[1], id, id) > 0 then break end
    redis.call('LPOP', KEYS[4])
  end
  local listed = 0
  for _, e in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do listed = listed + tonumber(string.match(e, ' (%d+)$')) end
  redis.call('HSET', KEYS[2], 'listed', listed)
end
-- events in the stream: those of the listed batch entries, one for every other entry
local function held() return redis.call('XLEN', KEYS[1]) - redis.call('LLEN', KEYS[4]) + tonumber(redis.call('HGET', KEYS[2], 'listed')) end
local id = redis.call('XADD', KEYS[1], '*', 'n', n, 'b', ARGV[12])
redis.call('RPUSH', KEYS[4], id .. ' ' .. n)
redis.call('HINCRBY', KEYS[2], 'listed', n)
for i = 14, index_end do redis.call('SET', ARGV[4] .. ARGV[i], id, 'NX', 'EX', ARGV[3]) end
for i = index_end + 1, counts_end, 2 do redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1]) end
for i = counts_end + 1, sums_end, 2 do redis.call('HINCRBYFLOAT', KEYS[3], ARGV[i], ARGV[i + 1]) end
for i = sums_end + 1, #ARGV, 3 do
  local key = ARGV[10] .. ARGV[i]
  redis.call('HINCRBY', key, ARGV[i + 1], ARGV[i + 2])
  redis.call('EXPIRE', key, ARGV[11])
end
redis.call('HINCRBY', KEYS[2], 'written', n)
if ARGV[5] ~= '0' then redis.call('HINCRBY', KEYS[2], 'failed', ARGV[5]) end
if ARGV[6] ~= '0' then redis.call('HINCRBY', KEYS[2], 'dropped', ARGV[6]) end
local age = minid ~= '' and tonumber(minid) or nil
-- 1. one-row entries older than the oldest batch entry go first (at most 10,000 a write)
local hid = head()
local want, one_rows_left = held() - max, false
if want > 0 then
  local older = redis.call('XRANGE', KEYS[1], '-', '(' .. hid, 'COUNT', math.min(want, 10000))
  if #older > 0 then redis.call('XTRIM', KEYS[1], 'MINID', after(older[#older][1])) end
  one_rows_left = #older == 10000
end
if age and ms(hid) >= age then redis.call('XTRIM', KEYS[1], 'MINID', minid) end  -- (older batch entries: in 2.)
-- 2. then whole batch entries, and the one-row entries between them
local now, removed, cut = held(), 0, nil
while not one_rows_left do
  local bid, bn = head()
  if not bid then break end
  if not ((age and ms(bid) < age) or now - removed - bn >= max) then break end
  redis.call('LPOP', KEYS[4])
  removed, cut = removed + bn, bid
end
if cut then
  local bound = after(cut)
  if age and ms(bound) < age then bound = minid end
  redis.call('XTRIM', KEYS[1], 'MINID', bound)
  redis.call('HINCRBY', KEYS[2], 'listed', 0 - removed)
end
redis.call('HSET', KEYS[2], 'held', held())
return n
"""
NO_TALLY: tuple[Any, ...] = ((), (), ())


class Recorder:
    """Buffers events of one app in this process and writes them in batches."""

    def __init__(self, app: Any) -> None:
        self.app = app
        h = app.settings.history
        self.max_value_bytes, self.max_events, self.max_age = h.max_value_bytes, h.max_events, h.max_age
        self.stream = app.keys.runs()
        self.entries_key = app.keys.run_entries()
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
        packed: list[str] = []
        indexed: list[str] = []
        for row, index_id, (tally_counts, tally_sums, tally_minutes) in batch:
            packed.append(row)
            if index_id:
                indexed.append(index_id)
            counts.update(tally_counts)
            minutes.update(tally_minutes)
            for name, seconds in tally_sums:
                sums[name] += seconds
        argv: list[Any] = [self.max_events, minid, max(int(self.max_age), 1), self.index_prefix, failed, dropped]
        argv += [len(batch), len(counts), len(sums), self.minute_prefix, tallies.MINUTE_TTL, rows.block(packed), len(indexed), *indexed]
        for name, n in counts.items():
            argv += (name, n)
        for name, seconds in sums.items():
            argv += (name, repr(seconds))
        for (minute, name), n in minutes.items():
            argv += (minute, name, n)
        with redis_client(self.app) as client:
            if self._script is None:
                self._script = client.register_script(_WRITE)
            self._script(keys=[self.stream, self.stats_key, self.tallies_key, self.entries_key], args=argv, client=client)
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
    lines = rows.entry_rows(entry[0][1]).split(b"\n") if entry else []
    found = (row for line in lines if (row := rows.unpack(line))["id"] == task_id and row["event"] in INDEXED)
    if (row := next(found, None)) is None:
        raise UnknownRun(task_id)
    return {
        "task": row["task"], "args": row["args"], "kwargs": row["kwargs"], "cut": row["cut"].split(",") if row["cut"] else [],
        "queue": row["queue"] or None, "priority": int(row["priority"]) if row["priority"] else None,
    }  # fmt: skip


def stats_read(app: Any) -> Read[dict[str, int]]:
    """The recorders' counters summed over every process since the history began, for a shared pipeline."""

    def parse(replies: list[Any]) -> dict[str, int]:
        return {name: int(replies[0].get(name.encode(), 0)) for name in STATS}

    return Read(lambda pipe: pipe.hgetall(app.keys.recorder_stats()), parse)
