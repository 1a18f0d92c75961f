"""Leases on delivered messages: a dead worker's tasks come back within seconds, a live worker's never.

kombu's Redis transport keeps each delivered, unacknowledged message in a hash, with its
delivery time in a sorted set (the unacked index), and hands it back only once that time is
older than `visibility_timeout` (1 h here, so no running task is ever handed out twice), in a
sweep that runs about every 100 s. So a SIGKILLed worker's tasks waited over an hour.

Here every worker renews, every `broker.lease` / 5 seconds, the index entry of each message
it holds (prefetched, running, or waiting for its ETA, including those of a connection it
lost), and stamps itself as seen. Any worker gives back to the head of its queue a message
whose entry went unrenewed for `broker.lease`: its holder is gone (SIGKILL, OOM, a lost host,
a Redis restart that cut its connection). The give-back is one transaction per message that
watches the entry, so a renewal that lands first wins and no message is restored twice.
Renewal runs in a thread of the worker's main process, so a busy event loop or the solo pool
does not stop it. The cost: clocks of the hosts must agree to well within the lease, and every
worker on the broker must be a taskkit worker (a plain Celery worker renews nothing).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery import bootsteps
from celery.worker import state as worker_state
from celery.worker.request import Request
from kombu.transport import redis as kombu_redis
from kombu.transport.redis import Mutex, MutexHeld

from .broker import REDIS_ERRORS, Read, redis_client

log = logging.getLogger(__name__)

RENEWALS_PER_LEASE = 5  # a live holder misses this many renewals before its messages go back
RESTORE_BATCH = 100  # expired messages given back per round at most
SEEN_FOR = 7 * 86400.0  # seconds a gone worker stays in the seen sets (history marks its runs LOST)
PRUNE_EVERY = 100  # rounds between removals of gone workers' statuses


# Messages this worker took whose unacked entry may not be in Redis: (delivery tag, payload,
# exchange, routing key). BRPOP took them but recording them failed (the connection broke
# between kombu's two commands), or the connection went away while they waited to run (Celery
# then forgets them) and a failover may have lost their entry with the old primary.
orphans: list[tuple[str, dict[str, Any], str, str]] = []


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS with two guards for a Redis that goes away; installed by `taskkit.transport.install()`.

    - A message BRPOP took but could not record as unacknowledged (kombu's second command
      failed) was dropped for good; it is kept in `orphans`, and the lease thread puts it
      back at the head of its queue once Redis answers. So is a message that had not started
      when the connection went (Celery forgets it, and leaves it to its unacked entry): after
      a Sentinel failover that entry may have died with the old primary, so the lease thread
      puts back each such message whose entry the new primary lacks (one that has it, its
      lease gives back). A restore through a live connection does the same (restore_by_tag).
    - Celery 5.7's consumer, on a lost connection, `collect()`s the connection (which drops
      the transport's client) and then `close()`s it again; a channel left open by the first
      pass then restores its unacked messages through a transport without a client, and
      kombu raises `AttributeError: 'NoneType' object has no attribute 'hostname'` from
      `_connparams` (the crash of kombu#582, here from restore_unacked), which kills the
      worker ("Unrecoverable error"; seen in the fault suite's Redis-restart loop). There
      is no Redis to restore to then; the messages stay in the unacked hash, and leases give
      them back. A task that ends after its channel was closed acks through no connection
      the same way (`'NoneType' object has no attribute 'client'`); that is raised as the
      connection error it is, which kombu's and Celery's callers already handle ("Couldn't
      ack"), and the message's lease gives it back.
    """

    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)
        except Exception:
            orphans.append(_orphan(delivery_tag, message))
            raise

    def _gone(self) -> bool:
        transport = self.channel.connection
        return transport is None or transport.client is None

    @contextmanager
    def pipe_or_acquire(self, pipe: Any = None, client: Any = None) -> Iterator[Any]:
        if pipe is None and client is None and self._gone():
            raise redis.ConnectionError("the channel's connection is closed")
        with super().pipe_or_acquire(pipe, client) as acquired:
            yield acquired

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        """kombu's, but a message this channel holds whose entry Redis lacks goes back from memory, not nowhere.

        After a Sentinel failover the new primary may lack the entry of a message taken just
        before (replication is asynchronous); kombu restored only what the entry held.
        """
        held = self._delivered.get(tag)

        def restore_transaction(pipe: Any) -> None:
            raw = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            self._remove_from_indices(tag, pipe)
            if raw:
                message, exchange, routing_key = json.loads(raw)
            elif held is not None:
                _, message, exchange, routing_key = _orphan(tag, held)
            else:
                return
            self.channel._do_restore_message(message, exchange, routing_key, pipe, leftmost)

        with self.channel.conn_or_acquire(client) as acquired:
            acquired.transaction(restore_transaction, self.unacked_key)

    def restore_unacked(self, client: Any = None) -> Any:
        if client is None and self._gone():
            running = {r.message.delivery_tag for r in list(worker_state.active_requests) if r.message is not None}
            waiting = [_orphan(tag, m) for tag, m in list(self._delivered.items()) if tag not in running]
            orphans.extend(waiting)  # a running one acks (or its lease gives it back); a waiting one Celery drops
            log.info("taskkit: %d unacked message(s) left for their leases: the connection is already gone", len(self._delivered))
            self._delivered.clear()
            return None
        return super().restore_unacked(client)


def _orphan(tag: str, message: Any) -> tuple[str, dict[str, Any], str, str]:
    info = message.delivery_info
    return tag, message._raw, info["exchange"], info["routing_key"]


def give_back_orphans(channel: Any) -> int:
    """Put every kept orphan whose unacked entry Redis lacks back at the head of its queue (kombu's routing and priority).

    No watch is needed: only this worker ever writes the entry of a message it took. Returns how many went back.
    """
    if not orphans:
        return 0
    taken = orphans[:]
    with channel.conn_or_acquire() as client:
        present = client.hmget(channel.qos.unacked_key, [tag for tag, *_ in taken])
        lost = [o for o, entry in zip(taken, present, strict=True) if entry is None]
        if lost:
            with client.pipeline() as pipe:
                for _, message, exchange, routing_key in lost:
                    channel._do_restore_message(message, exchange, routing_key, pipe)
                pipe.execute()
    del orphans[: len(taken)]
    if lost:
        log.warning("taskkit: %d message(s) taken from a queue as Redis went away put back in it", len(lost))
    return len(lost)


def seen_read(app: Any) -> Read[dict[str, tuple[float, float]]]:
    """Every worker taskkit saw: hostname → (last renewal, start of its current run), UNIX seconds."""
    keys = app.keys

    def parse(replies: list[Any]) -> dict[str, tuple[float, float]]:
        seen, born = (dict((k.decode(), v) for k, v in r) for r in replies)
        return {name: (at, born.get(name, 0.0)) for name, at in seen.items()}

    return Read(
        lambda pipe: (pipe.zrange(keys.workers_seen(), 0, -1, withscores=True), pipe.zrange(keys.workers_born(), 0, -1, withscores=True)),
        parse,
    )


class Leases(bootsteps.StartStopStep):
    """The consumer bootstep that renews this worker's leases and gives back expired ones."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.lease = c.app.settings.broker.lease
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.rounds = 0

    def include_if(self, c: Any) -> bool:
        return bool(c.app.settings.broker.lease)

    def start(self, c: Any) -> None:
        if self.thread is not None and self.thread.is_alive():  # a reconnect restarts the steps
            return
        self.stopping.clear()
        with redis_client(c.app) as client:
            client.zadd(c.app.keys.workers_born(), {c.hostname: time.time()})
        self.thread = threading.Thread(target=self._run, args=(c,), name="taskkit-leases", daemon=True)
        self.thread.start()

    def shutdown(self, c: Any) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(5)

    def _run(self, c: Any) -> None:
        every = self.lease / RENEWALS_PER_LEASE
        while True:  # a first round at once: the worker is seen as soon as it consumes
            try:
                self.round(c)
            except REDIS_ERRORS as exc:  # Redis away: the consumer reconnects; renew once it is back
                log.debug("taskkit leases: Redis unavailable (%s)", exc)
            except Exception:  # never let bookkeeping kill the thread
                log.exception("taskkit leases: round failed")
            if self.stopping.wait(every):
                return

    def round(self, c: Any) -> list[str]:
        """Renew what this worker holds, stamp it as seen, give back what expired; returns the tags given back."""
        channel = getattr(c.task_consumer, "channel", None)
        if channel is None or channel.connection is None:
            return []
        give_back_orphans(channel)
        qos = channel.qos
        held = held_tags(c)
        now = time.time()
        with channel.conn_or_acquire() as kombu_client:
            with kombu_client.pipeline(transaction=False) as pipe:
                if held:
                    pipe.zadd(qos.unacked_index_key, dict.fromkeys(held, now), xx=True)
                pipe.zrangebyscore(qos.unacked_index_key, "-inf", now - self.lease, start=0, num=RESTORE_BATCH)
                expired = [t.decode() if isinstance(t, bytes) else t for t in pipe.execute()[-1]]
            keys = c.app.keys
            with redis_client(c.app) as client, client.pipeline(transaction=False) as pipe:
                pipe.zadd(keys.workers_seen(), {c.hostname: now})
                pipe.hset(keys.workers_status(), c.hostname, json.dumps(status(c)))
                for key in (keys.workers_seen(), keys.workers_born()):
                    pipe.zremrangebyscore(key, "-inf", now - SEEN_FOR)
                pipe.execute()
                self.rounds += 1
                if self.rounds % PRUNE_EVERY == 0:  # statuses of workers gone for SEEN_FOR
                    gone = {*client.hkeys(keys.workers_status())} - {*client.zrange(keys.workers_seen(), 0, -1)}
                    if gone:
                        client.hdel(keys.workers_status(), *gone)
            expired = [t for t in expired if t not in held]
            if not expired:
                return []
            try:
                with Mutex(kombu_client, qos.unacked_mutex_key, qos.unacked_mutex_expire):  # kombu's own restore takes it too
                    given = [t for t in expired if _give_back(kombu_client, channel, qos, t, now - self.lease)]
            except MutexHeld:
                return []
        if given:
            log.warning(
                "taskkit: %d message(s) held by no live worker for %gs put back in their queues: %s",
                len(given),
                self.lease,
                ", ".join(given),
            )
        return given


def status(c: Any) -> dict[str, Any]:
    """What the metrics exporter shows of this worker: its queues, pool size and running tasks."""
    consumer = c.task_consumer
    return {
        "queues": sorted(q.name for q in consumer.queues) if consumer is not None else [],
        "pool": getattr(c.pool, "num_processes", None),
        "active": len(worker_state.active_requests),
    }


def presence_read(app: Any) -> Read[dict[str, dict[str, Any]]]:
    """The workers that renewed their leases within broker.lease (visibility_timeout with leases off), with their status()."""
    keys = app.keys
    lease = app.settings.broker.lease or app.settings.broker.visibility_timeout

    def parse(replies: list[Any]) -> dict[str, dict[str, Any]]:
        live, statuses = replies
        raw = {k.decode(): v for k, v in statuses.items()}
        return {name.decode(): json.loads(raw.get(name.decode(), "{}")) for name in live}

    def enqueue(pipe: Any) -> None:
        pipe.zrangebyscore(keys.workers_seen(), time.time() - lease, "+inf")
        pipe.hgetall(keys.workers_status())

    return Read(enqueue, parse)


def held_tags(c: Any) -> set[str]:
    """Delivery tags of every message this worker holds: on its channel, running, reserved, or timed for an ETA."""
    tags: set[str] = set()
    channel = getattr(c.task_consumer, "channel", None)
    if channel is not None:
        tags.update(channel.qos._delivered.copy())  # a dict copy is atomic under the GIL; the event loop mutates it
    for _ in range(5):  # the event loop may change these sets while we copy them
        try:
            requests = [*worker_state.active_requests, *worker_state.reserved_requests]
            timed = [(getattr(e.entry, "args", None) or [None])[0] for e in list(c.timer.schedule.queue)] if c.timer else []
            break
        except RuntimeError:
            continue
    else:
        return tags
    for req in (*requests, *timed):
        if isinstance(req, Request) and req.message is not None:
            tags.add(req.message.delivery_tag)
    return tags


def _give_back(client: Any, channel: Any, qos: Any, tag: str, cutoff: float) -> bool:
    """Restore one message to the head of its queue if its entry is still older than cutoff."""
    restored = False

    def transaction(pipe: Any) -> None:  # redis-py runs it again if a watched key changed before EXEC
        nonlocal restored
        restored = False
        score = pipe.zscore(qos.unacked_index_key, tag)
        raw = pipe.hget(qos.unacked_key, tag)
        if score is None or score >= cutoff:  # acknowledged, or renewed meanwhile
            return
        pipe.multi()
        pipe.zrem(qos.unacked_index_key, tag)
        pipe.hdel(qos.unacked_key, tag)
        if raw is not None:
            message, exchange, routing_key = json.loads(raw)
            channel._do_restore_message(message, exchange, routing_key, pipe)  # kombu's routing, priority, `redelivered`
            restored = True

    client.transaction(transaction, qos.unacked_index_key, qos.unacked_key)
    return restored
