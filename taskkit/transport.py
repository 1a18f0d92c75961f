"""What taskkit changes in kombu's Redis transport (Sentinel's too), installed once by create_app.

- QoS: `taskkit.leases.QoS` (a message taken but not recorded as unacked is kept and given
  back; no restore through a collected connection; an ack after its channel closed raises
  the connection error Celery handles).
- One redis-py client per channel: kombu builds a new `redis.Redis` for every command it
  sends (each with some 170 response callbacks), about a sixth of a publish's CPU. A channel
  of a taskkit app (transport option REUSE, set by create_app) keeps one per connection pool
  instead; a new pool (after a lost connection) gets a new client. Plain Celery apps in the
  same process are left as kombu made them.
- Durable publishes: with transport option REPLICAS (N, timeout), set from
  broker.replicas_ack, a publish sends its LPUSH and a `WAIT N timeout` on one connection
  (WAIT counts the replicas that have this connection's writes) and raises NotReplicated
  when fewer than N had it in time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from .errors import NotReplicated
from .leases import QoS

REUSE = "taskkit_reuse_client"  # broker transport option: this app's channels keep their client
REPLICAS = "taskkit_replicas_ack"  # broker transport option: (replicas, timeout s) each publish waits for

_kombu_put = kombu_redis.Channel._put

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


def _put(self: Any, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
    wanted = self.connection.client.transport_options.get(REPLICAS)
    if not wanted or "_publish_batch" in kwargs:  # kombu's own publish batches (Celery does not use them) as kombu does
        return _kombu_put(self, queue, message, **kwargs)
    replicas, timeout = wanted
    key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
    with self.conn_or_acquire() as client:
        pipe = client.pipeline(transaction=False)  # one connection: WAIT covers the LPUSH
        pipe.lpush(key, dumps(message))
        if self._expires and queue in self._expires:
            for p in self.priority_steps:
                pipe.pexpire(self._q_for_pri(queue, p), self._expires[queue])
        pipe.execute_command("WAIT", replicas, int(timeout * 1000))
        acked = pipe.execute()[-1]
    if acked < replicas:
        raise NotReplicated(f"task {message['headers'].get('id', '?')}", acked, replicas, timeout)


def install() -> None:
    """Make kombu's Redis channels use taskkit's QoS, for taskkit apps one client each and durable publishes."""
    kombu_redis.Channel.QoS = QoS
    kombu_redis.Channel.conn_or_acquire = _conn_or_acquire
    kombu_redis.Channel._put = _put
