"""Every Redis client taskkit makes, and what it asks the server about itself.

Celery and kombu keep their own connections for messages and results; everything taskkit
reads or writes itself (history, dead letters, queue depths, schedules, server info) goes
through the clients made here, so connection errors become one BrokerUnavailable, with the
password masked, wherever they happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from redbeat.schedulers import get_redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .config import mask_url
from .errors import BrokerUnavailable

# NoPermissionError: an ACL user that may not run a command (the read-only monitor user and EVAL, say)
REDIS_ERRORS = (OperationalError, redis.ConnectionError, redis.TimeoutError, redis.exceptions.NoPermissionError, OSError)
INFO_FIELDS = {  # INFO field -> how taskkit names it (plain data for health, widgets, metrics)
    "redis_version": "version",
    "uptime_in_seconds": "uptime_s",
    "connected_clients": "connected_clients",
    "used_memory": "used_memory_bytes",
    "maxmemory": "maxmemory_bytes",
    "maxmemory_policy": "maxmemory_policy",
    "evicted_keys": "evicted_keys",
    "aof_enabled": "aof_enabled",
    "aof_last_write_status": "aof_last_write_status",
    "role": "role",
}


def unavailable(app: Celery, exc: BaseException | str) -> BrokerUnavailable:
    reason = (str(exc) or type(exc).__name__).rstrip(".")
    if isinstance(exc, redis.exceptions.NoPermissionError):
        reason = f"the Redis user may not do this ({reason}); use the application's ACL user"
    return BrokerUnavailable(mask_url(app.conf.broker_url), reason)


@contextmanager
def redis_client(app: Celery) -> Iterator[Any]:
    """A redis-py client on the broker; connection errors become BrokerUnavailable.

    redis:// and rediss:// get one pooled client per app that fails after one timeout
    (no silent retries); sentinel:// goes through kombu, which knows how to find the master.
    """
    url = app.conf.broker_url
    try:
        if url.startswith("sentinel://"):
            with app.connection_for_write() as conn:
                # a plain client on kombu's pool: keys.py already spells kombu's key prefix
                yield redis.Redis(connection_pool=conn.default_channel.pool)
            return
        client = app.__dict__.get("_taskkit_redis")
        if client is None:
            timeout = app.conf.broker_connection_timeout
            client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))
            app._taskkit_redis = client
        yield client
    except REDIS_ERRORS as exc:
        raise unavailable(app, exc) from None
    except redis.ResponseError as exc:  # at connect: SELECT of a database the server does not have
        if "DB index" not in str(exc):
            raise
        raise unavailable(app, f"{exc} (a server has `databases` 16 unless redis.conf says more)") from None


def redbeat_redis(app: Celery) -> Any:
    """celery-redbeat's own client (decoded strings, `redbeat_redis_options`), as beat uses it."""
    return get_redis(app)


@contextmanager
def redbeat_client(app: Celery) -> Iterator[Any]:
    """redbeat's client, connection errors as BrokerUnavailable (for the schedules API)."""
    try:
        yield redbeat_redis(app)
    except REDIS_ERRORS as exc:
        raise unavailable(app, exc) from None


T = TypeVar("T")


@dataclass(frozen=True)
class Read(Generic[T]):
    """One reader's commands for a shared pipeline, and how its replies become plain data."""

    enqueue: Callable[[Any], None]  # adds commands to the pipeline
    parse: Callable[[list[Any]], T]  # gets exactly the replies of those commands


def read(app: Celery, *reads: Read[Any]) -> list[Any]:
    """Run several readers in one pipelined round trip; one result per reader, in order."""
    with redis_client(app) as client:
        pipe = client.pipeline(transaction=False)
        bounds = []
        for r in reads:
            start = len(pipe)
            r.enqueue(pipe)
            bounds.append((start, len(pipe)))
        replies = pipe.execute()
    return [r.parse(replies[a:b]) for r, (a, b) in zip(reads, bounds, strict=True)]


def check_reachable(app: Celery) -> None:
    """One PING, once per app, so the first submit to a dead Redis fails within one timeout."""
    if app.__dict__.get("_taskkit_reachable"):
        return
    with redis_client(app) as client:
        client.ping()
    app._taskkit_reachable = True


def server_info(app: Celery) -> dict[str, Any]:
    """Round-trip latency (one PING) and the INFO fields taskkit shows, as plain data."""
    with redis_client(app) as client:
        start = time.perf_counter()
        client.ping()
        latency_ms = (time.perf_counter() - start) * 1000
        try:
            info = client.info()
        except redis.ResponseError:  # INFO may be renamed away on a managed Redis
            info = {}
    out: dict[str, Any] = {"latency_ms": round(latency_ms, 3)}
    out.update((name, info[field]) for field, name in INFO_FIELDS.items() if field in info)
    return out


def eviction_warning(app: Celery) -> str | None:
    """A warning when Redis may evict any key under memory pressure, schedules included."""
    try:
        policy = server_info(app).get("maxmemory_policy", "")
    except BrokerUnavailable:
        return None
    if not policy.startswith("allkeys-"):
        return None
    return (
        f"Redis maxmemory-policy is {policy}: under memory pressure it may drop schedules, their run records "
        "and the beat lock. Set maxmemory-policy to noeviction (taskkit's local stack and deploy do)."
    )
