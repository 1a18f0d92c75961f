"""Every Redis key name taskkit reads or owns, in one place.

taskkit's own keys live under one prefix (`key_prefix`, default "taskkit"). Queue keys
belong to kombu and result keys to Celery: taskkit only reads them, under the names
those libraries document, and spells them nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kombu.transport.redis import Channel
from redbeat.schedulers import ensure_conf

from .kinds import PRIORITIES

PRIORITY_SEP = Channel.sep  # kombu: "<queue>\x06\x16<priority>" for levels above 0
RESULT_PREFIX = "celery-task-meta-"  # Celery's Redis result backend


class Keys:
    """Key names for one deployment.

    kombu's names are given in full, with kombu's `global_keyprefix`, `sep` and
    `unacked_key` from the broker transport options (`[celery] broker_transport_options`),
    so a plain Redis client reads exactly the keys kombu writes. kombu's own prefixing
    client is no help here: it leaves LRANGE and HVALS unprefixed.
    """

    def __init__(self, prefix: str, *, transport_options: Mapping[str, Any] | None = None) -> None:
        self.prefix = prefix
        options = transport_options or {}
        self.kombu_prefix: str = options.get("global_keyprefix") or ""
        self._sep: str = options.get("sep") or PRIORITY_SEP
        self._unacked: str = options.get("unacked_key") or Channel.unacked_key

    def own(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # ---- kombu's queue lists and unacked hash (read only)

    def queue(self, name: str, priority: int = 0) -> str:
        """The Redis list holding messages of one queue at one priority level."""
        return self.kombu_prefix + (f"{name}{self._sep}{priority}" if priority else name)

    def queue_levels(self, name: str) -> list[str]:
        return [self.queue(name, p) for p in PRIORITIES]

    def pidbox_bindings(self, exchange: str = "celery.pidbox") -> str:
        """kombu's set of queues bound to the workers' remote-control exchange: one member per worker."""
        return self.kombu_prefix + Channel.keyprefix_queue % exchange

    def bindings_pattern(self) -> str:
        """kombu's binding sets of every exchange (SCAN pattern): how queues nobody declared are found."""
        return self.kombu_prefix + Channel.keyprefix_queue % "*"

    def bound_queue(self, member: bytes | str) -> str:
        """The queue of a binding-set member ("<routing key><sep><pattern><sep><queue>")."""
        text = member.decode() if isinstance(member, bytes) else member
        return text.rpartition(self._sep)[2]

    def worker_of_binding(self, member: bytes | str) -> str:
        """The worker hostname in a pidbox binding (its queue is "<hostname>.celery.pidbox")."""
        return self.bound_queue(member).removesuffix(".celery.pidbox")

    def unacked(self) -> str:
        """kombu's hash of delivered, unacknowledged messages: tag → [message, exchange, routing key]."""
        return self.kombu_prefix + self._unacked

    # ---- Celery's results (read only)

    def result_pattern(self) -> str:
        return f"{RESULT_PREFIX}*"

    # ---- taskkit's own

    def redbeat_prefix(self) -> str:
        """celery-redbeat's key prefix: schedule entries, the due-time sorted set, the lock."""
        return self.own("redbeat") + ":"

    def runs(self) -> str:
        """The run-history stream: one entry per recorder batch of lifecycle events (capture.rows)."""
        return self.own("runs")

    def run_entries(self) -> str:
        """The history stream's batch entries, oldest first, with their row counts ("id n", a list; for trimming)."""
        return self.own("runs", "entries")

    def run_index(self, task_id: str) -> str:
        """Stream id of the entry with the event that carries a run's original arguments (for rerun)."""
        return self.own("run", task_id)

    def recorder_stats(self) -> str:
        """The recorders' counters summed over every process: written, failed, dropped (a hash)."""
        return self.own("recorder")

    def tallies(self) -> str:
        """Task counts and runtime / queue-wait histograms, added with each history batch (a hash; capture.tallies)."""
        return self.own("tallies")

    def minute(self, minute: int | str) -> str:
        """Runs that ended and failed in one minute (UNIX seconds // 60; a hash, kept a day)."""
        return self.own("minute", str(minute))

    def alerts_active(self) -> str:
        """Alerts firing now: key ("rule:subject") -> JSON (since, value, threshold, message) (a hash)."""
        return self.own("alerts", "active")

    def alerts_stream(self) -> str:
        """Every alert transition, firing or resolved, oldest first (a stream, bounded by alerts.keep)."""
        return self.own("alerts", "log")

    def beat_status(self) -> str:
        """The active beat: `holder` (host:pid) and `tick` (UNIX seconds), written with every tick (a hash)."""
        return self.own("beat")

    def workers_status(self) -> str:
        """Each live worker's queues, pool size and active tasks, as JSON, written with its lease renewals (a hash)."""
        return self.own("workers", "status")

    def workers_seen(self) -> str:
        """Workers by the time they last renewed their leases (a sorted set, UNIX seconds)."""
        return self.own("workers", "seen")

    def workers_born(self) -> str:
        """Workers by the time their current run started (a sorted set): a restart under the same name shows here."""
        return self.own("workers", "born")

    def deadletter(self, task_id: str) -> str:
        """One dead letter: the failed message, its error and its replay state (a hash)."""
        return self.own("dlq", "entry", task_id)

    def deadletter_queue(self, queue: str) -> str:
        """Dead letters of one queue, scored by failure time (a sorted set of task ids)."""
        return self.own("dlq", "queue", queue)

    def deadletter_queues(self) -> str:
        """The queues that have dead letters (a set)."""
        return self.own("dlq", "queues")


@dataclass(frozen=True)
class RedBeatKeys:
    """celery-redbeat's keys for one app, as redbeat itself names them from `redbeat_prefix()`."""

    prefix: str  # + a schedule's name: its hash (`definition`, `meta`)
    schedule: str  # sorted set: schedule hash -> next due time, UNIX seconds; < 0 is never due
    statics: str  # set: the names declared in taskkit.toml at the last sync
    lock: str  # the active beat's lock (a string with a TTL)

    def entry(self, name: str) -> str:
        return self.prefix + name  # redbeat: RedBeatSchedulerEntry.generate_key

    def name(self, key: str) -> str:
        return key[len(self.prefix) :]


def redbeat_keys(app: Any) -> RedBeatKeys:
    """Read through redbeat's config (redbeat_key_prefix, redbeat_lock_key), so the names always match its own."""
    conf = ensure_conf(app)
    return RedBeatKeys(prefix=conf.key_prefix, schedule=conf.schedule_key, statics=conf.statics_key, lock=conf.lock_key)
