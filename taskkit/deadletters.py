"""Dead letters: tasks that failed for good, kept per queue with everything needed to replay.

A dead letter is one Redis hash (the message, the error, the replay state) indexed per
queue by failure time (`taskkit.capture.letters` writes them as tasks fail). Replay is
claim → publish → confirm:

- claim sets a replay id atomically (a script), so two replays never both publish;
- publish sends the original message again under that replay id;
- confirm marks the dead letter replayed; replaying it again then needs force=True.

If a process dies between claim and confirm the dead letter stays, claimed: after the claim
lease a later replay resumes it with the same replay id, and skips publishing when the run
history shows that id was already sent. Nothing is lost; a duplicate needs a crash inside
the recorder's few-millisecond buffer window (tasks are idempotent anyway).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from .app import TaskkitApp, get_app
from .broker import Read, read, redis_client
from .capture import letters
from .client import submit
from .errors import AlreadyReplayed, ReplayInProgress, UnknownDeadLetter
from .kinds import POSITIVE, Since, epoch, refuse

CLAIM_LEASE = 60.0  # seconds a claim is honoured before another replay may resume it
LIST_LIMIT = 1000  # dead letters returned by entries() unless asked for more

# Atomically claim a dead letter for replay. Returns "claimed", "resume", "replayed" or
# "busy", and the replay id in force.
_CLAIM = """
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then return {'missing', ''} end
local replay_id = redis.call('HGET', h, 'replay_id')
local replayed = redis.call('HGET', h, 'replayed_at')
local force, now, lease = ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
if not force and replayed then return {'replayed', replay_id} end
if not force and replay_id then
  local claimed = tonumber(redis.call('HGET', h, 'claimed_at') or '0')
  if now - claimed < lease then return {'busy', replay_id} end
  redis.call('HSET', h, 'claimed_at', ARGV[3])
  return {'resume', replay_id}
end
redis.call('HSET', h, 'replay_id', ARGV[1], 'claimed_at', ARGV[3])
redis.call('HDEL', h, 'replayed_at')
return {'claimed', ARGV[1]}
"""


# Every queue with dead letters and its count. KEYS: the queues set; ARGV: the per-queue key prefix.
_COUNTS = """
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = q
  out[#out + 1] = redis.call('ZCARD', ARGV[1] .. q)
end
return out
"""


# ------------------------------------------------------------ reading


def get(task_id: str, *, app: TaskkitApp | None = None) -> dict[str, Any]:
    """One dead letter: message, exception, traceback, attempts, replay state."""
    app = app or get_app()
    with redis_client(app) as client:
        raw = client.hgetall(app.keys.deadletter(task_id))
    if not raw:
        raise UnknownDeadLetter(task_id)
    return letters.decode(raw)


def entries(
    *,
    app: TaskkitApp | None = None,
    queue: str | None = None,
    task: str | None = None,
    exc_type: str | None = None,
    since: Since = None,
    until: Since = None,
    limit: int = LIST_LIMIT,
) -> list[dict[str, Any]]:
    """Dead letters, newest first, filtered by queue, task, exception type and failure time."""
    app = app or get_app()
    refuse("limit", limit, POSITIVE)
    now = time.time()
    low, high = epoch(since, now=now), epoch(until, now=now)
    low, high = "-inf" if low is None else low, "+inf" if high is None else high
    keys = app.keys
    with redis_client(app) as client:
        queues = [queue] if queue else sorted(q.decode() for q in client.smembers(keys.deadletter_queues()))
        pipe = client.pipeline(transaction=False)
        for q in queues:
            pipe.zrevrangebyscore(keys.deadletter_queue(q), high, low)
        ids = [i.decode() for found in pipe.execute() for i in found]
        pipe = client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(keys.deadletter(task_id))
        found = [letters.decode(raw) for raw in pipe.execute() if raw]
    found = [e for e in found if (task is None or e["task"] == task) and (exc_type is None or e["exc_type"] == exc_type)]
    found.sort(key=lambda e: e["failed_at"], reverse=True)
    return found[:limit]


def counts(*, app: TaskkitApp | None = None) -> dict[str, int]:
    """Dead letters per queue (queues with none left out), in one round trip."""
    app = app or get_app()
    return read(app, counts_read(app))[0]


def counts_read(app: TaskkitApp) -> Read[dict[str, int]]:
    """Dead letters per queue, for a shared pipeline (one script call)."""
    keys = app.keys

    def parse(replies: list[Any]) -> dict[str, int]:
        flat = replies[0]
        return {q.decode(): n for q, n in sorted(zip(flat[::2], flat[1::2], strict=True)) if n}

    return Read(lambda pipe: pipe.eval(_COUNTS, 1, keys.deadletter_queues(), keys.deadletter_queue("")), parse)


def count(*, queue: str | None = None, app: TaskkitApp | None = None) -> int:
    """How many dead letters there are (of one queue): a ZCARD, not a listing."""
    app = app or get_app()
    if queue is None:
        return sum(counts(app=app).values())
    with redis_client(app) as client:
        return int(client.zcard(app.keys.deadletter_queue(queue)))


# ------------------------------------------------------------ replay, drop, purge


def replay(
    task_ids: list[str] | str,
    *,
    app: TaskkitApp | None = None,
    queue: str | None = None,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    force: bool = False,
    lease: float = CLAIM_LEASE,
) -> list[dict[str, Any]]:
    """Send dead letters again (to their queue or `queue`, optionally with new args/kwargs).

    Everything is checked before anything is sent: unknown ids, already replayed ones
    (unless force), and the arguments. Returns one {"id", "replay_id", "queue", "status"}
    per dead letter.
    """
    app = app or get_app()
    ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
    letters = [get(i, app=app) for i in ids]
    done = {e["id"]: e["replay_id"] for e in letters if e["replayed"]}
    if done and not force:
        raise AlreadyReplayed(done)
    calls = []
    for e in letters:
        call_args, call_kwargs = (e["args"] if args is None else args), (e["kwargs"] if kwargs is None else kwargs)
        target = queue or e["queue"]
        options = {"queue": target, "priority": e.get("priority")}
        app.task_named(e["task"]).check_call(call_args, call_kwargs, options)  # before any claim
        calls.append((e, call_args, call_kwargs, target))
    out = []
    for e, call_args, call_kwargs, target in calls:
        status, replay_id = claim(e["id"], app=app, force=force, lease=lease)
        if status == "resume" and _was_sent(app, replay_id):
            status = "confirmed"  # it went out before a crash; only the mark was missing
        else:
            submit(e["task"], args=call_args, kwargs=call_kwargs, queue=target, priority=e.get("priority"),
                   task_id=replay_id, headers={"replay_of": e["id"]}, app=app)  # fmt: skip
        with redis_client(app) as client:
            client.hset(app.keys.deadletter(e["id"]), mapping={"replayed_at": time.time(), "replay_queue": target})
        out.append({"id": e["id"], "replay_id": replay_id, "queue": target, "status": status})
    return out


def claim(task_id: str, *, app: TaskkitApp | None = None, force: bool = False, lease: float = CLAIM_LEASE) -> tuple[str, str]:
    """Reserve a dead letter for replay: ("claimed" | "resume", replay_id). First step of replay()."""
    app = app or get_app()
    with redis_client(app) as client:
        status, replay_id = client.eval(_CLAIM, 1, app.keys.deadletter(task_id), str(uuid.uuid4()), int(force), time.time(), lease)
    status, replay_id = status.decode(), replay_id.decode()
    if status == "missing":
        raise UnknownDeadLetter(task_id)
    if status == "replayed":
        raise AlreadyReplayed({task_id: replay_id})
    if status == "busy":
        raise ReplayInProgress(task_id)
    return status, replay_id


def _was_sent(app: TaskkitApp, task_id: str) -> bool:
    with redis_client(app) as client:
        return bool(client.exists(app.keys.run_index(task_id)))


def drop(task_ids: list[str] | str, *, app: TaskkitApp | None = None) -> int:
    """Delete dead letters; returns how many existed."""
    app = app or get_app()
    ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
    letters = []
    for task_id in ids:
        try:
            letters.append(get(task_id, app=app))
        except UnknownDeadLetter:
            pass
    with redis_client(app) as client:
        pipe = client.pipeline(transaction=True)
        for e in letters:
            pipe.delete(app.keys.deadletter(e["id"]))
            pipe.zrem(app.keys.deadletter_queue(e["queue"]), e["id"])
        pipe.execute()
    return len(letters)


def purge(*, app: TaskkitApp | None = None, queue: str | None = None) -> int:
    """Delete every dead letter (of one queue); returns the count removed."""
    app = app or get_app()
    keys = app.keys
    with redis_client(app) as client:
        queues = [queue] if queue else [q.decode() for q in client.smembers(keys.deadletter_queues())]
        removed = 0
        for q in queues:
            ids = client.zrange(keys.deadletter_queue(q), 0, -1)
            pipe = client.pipeline(transaction=True)
            for task_id in ids:
                pipe.delete(keys.deadletter(task_id.decode()))
            pipe.delete(keys.deadletter_queue(q))
            pipe.srem(keys.deadletter_queues(), q)
            pipe.execute()
            removed += len(ids)
    return removed
