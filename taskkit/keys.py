"""Every Redis key name taskkit reads or owns, in one place.

taskkit's own keys live under one prefix (`key_prefix`, default "taskkit"). Queue keys
belong to kombu and result keys to Celery: taskkit only reads them, under the names
those libraries document, and spells them nowhere else.
"""

from __future__ import annotations

from kombu.transport.redis import Channel

from .config import PRIORITIES

PRIORITY_SEP = Channel.sep  # kombu: "<queue>\x06\x16<priority>" for levels above 0
RESULT_PREFIX = "celery-task-meta-"  # Celery's Redis result backend


class Keys:
    """Key names for one deployment.

    kombu's `global_keyprefix` (if set under [celery] broker_transport_options) is added
    by kombu's own Redis client, which is the client taskkit reads queues with.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def own(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # ---- kombu's queue lists (read only)

    def queue(self, name: str, priority: int = 0) -> str:
        """The Redis list holding messages of one queue at one priority level."""
        return f"{name}{PRIORITY_SEP}{priority}" if priority else name

    def queue_levels(self, name: str) -> list[str]:
        return [self.queue(name, p) for p in PRIORITIES]

    # ---- Celery's results (read only)

    def result_pattern(self) -> str:
        return f"{RESULT_PREFIX}*"

    # ---- taskkit's own

    def redbeat_prefix(self) -> str:
        """celery-redbeat's key prefix: schedule entries, the due-time sorted set, the lock."""
        return self.own("redbeat") + ":"
