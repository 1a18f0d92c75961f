"""What taskkit changes in kombu's Redis transport (Sentinel's too), installed once by create_app.

- QoS: `taskkit.leases.QoS` (a message taken but not recorded as unacked is kept and given
  back; no restore through a collected connection; an ack after its channel closed raises
  the connection error Celery handles).
- One redis-py client per channel: kombu builds a new `redis.Redis` for every command it
  sends (each with some 170 response callbacks), about a sixth of a publish's CPU. A channel
  of a taskkit app (transport option REUSE, set by create_app) keeps one per connection pool
  instead; a new pool (after a lost connection) gets a new client. Plain Celery apps in the
  same process are left as kombu made them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

from .leases import QoS

REUSE = "taskkit_reuse_client"  # broker transport option: this app's channels keep their client

_kombu_conn_or_acquire = kombu_redis.Channel.conn_or_acquire


@contextmanager
def _conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
    reuse = self.__dict__.get("_taskkit_reuse")
    if reuse is None:
        reuse = self._taskkit_reuse = bool(self.connection.client.transport_options.get(REUSE))
    if client or not reuse:
        with _kombu_conn_or_acquire(self, client) as given:
            yield given
        return
    pool, cached = self.pool, self.__dict__.get("_taskkit_client")
    if cached is None or cached.connection_pool is not pool:
        cached = self._taskkit_client = self._create_client()
    yield cached


def install() -> None:
    """Make kombu's Redis channels use taskkit's QoS and, for taskkit apps, one client each."""
    kombu_redis.Channel.QoS = QoS
    kombu_redis.Channel.conn_or_acquire = _conn_or_acquire
