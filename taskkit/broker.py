"""Every Redis client taskkit makes, how Celery's and redbeat's connect, and what taskkit asks the server.

Celery and kombu keep their own connections for messages and results; everything taskkit
reads or writes itself (history, dead letters, queue depths, schedules, server info) goes
through the clients made here, so connection errors become one BrokerUnavailable, with the
password masked, wherever they happen. `celery_options` turns the broker settings (a
sentinel list, TLS) into what Celery, kombu and celery-redbeat each expect, so one setting
configures them all.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from redbeat.schedulers import get_redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from .config import BrokerSettings, Settings, mask_url
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


# ---------------------------------------------------------------- how every client connects


def tls_options(b: BrokerSettings) -> dict[str, Any] | None:
    """redis-py's TLS arguments, or None without TLS; Celery's broker_use_ssl and redis_backend_use_ssl take the same."""
    if not b.uses_tls:
        return None
    out: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}  # always verify the server
    if b.tls_ca_file:
        out["ssl_ca_certs"] = b.tls_ca_file
    if b.tls_cert_file:
        out.update(ssl_certfile=b.tls_cert_file, ssl_keyfile=b.tls_key_file)
    return out


def sentinel_addresses(url: str) -> list[tuple[str, int]]:
    """(host, port) of each sentinel in a `sentinel://h1:26379;sentinel://h2:26379` list."""
    return [(p.hostname or "localhost", p.port or 26379) for p in map(urlsplit, url.split(";"))]


def primary_login(url: str) -> dict[str, Any]:
    """username, password and db of a sentinel list's first URL: how to log in to the primary the sentinels name."""
    first = urlsplit(url.split(";")[0])
    return {
        "username": first.username,
        "password": unquote(first.password) if first.password else None,
        "db": int(first.path.strip("/") or 0),
    }


def sentinel_kwargs(s: Settings) -> dict[str, Any]:
    """How to talk to the sentinels themselves: their own password (not Redis's), the timeouts, TLS."""
    out: dict[str, Any] = {"socket_connect_timeout": s.broker.timeout, "socket_timeout": s.broker.timeout}
    if s.sentinel_password:
        out["password"] = s.sentinel_password
    if tls := tls_options(s.broker):
        out.update(ssl=True, **tls)
    return out


def celery_options(s: Settings) -> dict[str, Any]:
    """The Celery settings that say how to reach Redis, for the broker, the result backend and celery-redbeat.

    kombu and Celery's backend take a sentinel list as the URL plus `master_name` and
    `sentinel_kwargs` in their transport options; redbeat only understands
    `redis-sentinel://` with a `sentinels` list (sibson/redbeat#199), so it gets that.
    TLS: the same redis-py arguments for all three.
    """
    timeout = s.broker.timeout
    tls = tls_options(s.broker)
    out: dict[str, Any] = {
        "redbeat_redis_url": s.broker_url,
        # Set, so redbeat neither falls back to (nor warns about) broker_transport_options.
        "redbeat_redis_options": {"socket_connect_timeout": timeout, "socket_timeout": timeout},
    }
    if s.broker.sentinel:
        to_sentinels = sentinel_kwargs(s)
        sentinel = {"master_name": s.broker.master_name, "sentinel_kwargs": to_sentinels}
        out["broker_transport_options"] = sentinel
        out["result_backend_transport_options"] = sentinel
        out["redbeat_redis_url"] = "redis-sentinel://"
        out["redbeat_redis_options"] = {
            "sentinels": sentinel_addresses(s.broker_url),
            "service_name": s.broker.master_name,
            **primary_login(s.broker_url),
            "socket_timeout": timeout,
            "sentinel_kwargs": to_sentinels,
        }
    if tls:
        out.update(broker_use_ssl=tls, redis_backend_use_ssl=tls, redbeat_redis_use_ssl=tls)
    return out


def _new_client(app: Celery) -> Any:
    """One pooled client that fails after one timeout (no silent retries); through the sentinels for a sentinel list."""
    settings: Settings | None = getattr(app, "settings", None)
    url, timeout = app.conf.broker_url, app.conf.broker_connection_timeout
    options: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_timeout": timeout, "retry": Retry(NoBackoff(), 0)}
    if settings is None or not settings.broker.sentinel:
        if settings is not None and (tls := tls_options(settings.broker)):
            options.update(tls)
        return redis.Redis.from_url(url, **options)
    if tls := tls_options(settings.broker):
        options.update(ssl=True, **tls)
    sentinel = Sentinel(sentinel_addresses(url), sentinel_kwargs=sentinel_kwargs(settings), **primary_login(url), **options)
    # a connection asks the sentinels for the primary each time it connects, so after a failover the next command finds the new one
    return sentinel.master_for(settings.broker.master_name)


def _sentinel_reason(app: Celery) -> str:
    """Why no sentinel named a primary, sentinel by sentinel, in one line: unreachable, refused, or another master name."""
    s: Settings = app.settings  # type: ignore[attr-defined]
    seen = []
    for host, port in sentinel_addresses(s.broker_url):
        try:
            masters = redis.Redis(host, port, retry=Retry(NoBackoff(), 0), **sentinel_kwargs(s)).sentinel_masters()
        except (redis.RedisError, OSError) as exc:
            seen.append(f"{host}:{port} {str(exc).rstrip('.') or type(exc).__name__}")
            continue
        state = masters.get(s.broker.master_name)
        if state is None:
            seen.append(f"{host}:{port} knows only {', '.join(map(repr, sorted(masters))) or 'no master'}")
        else:  # known, but down (s_down/o_down): a failover may be under way
            seen.append(f"{host}:{port} sees it {state.get('flags', '?')}")
    return (
        f"no sentinel named a primary for broker.master_name={s.broker.master_name!r} ({'; '.join(seen)}); "
        f"check the master name, the sentinel list and TASKKIT_SENTINEL_PASSWORD"
    )


def unavailable(app: Celery, exc: BaseException | str) -> BrokerUnavailable:
    reason = (str(exc) or type(exc).__name__).rstrip(".")
    if isinstance(exc, redis.exceptions.NoPermissionError):
        reason = f"the Redis user may not do this ({reason}); use the application's ACL user"
    elif isinstance(exc, MasterNotFoundError) and getattr(app, "settings", None) is not None:
        reason = _sentinel_reason(app)
    return BrokerUnavailable(mask_url(app.conf.broker_url), reason)


@contextmanager
def redis_client(app: Celery) -> Iterator[Any]:
    """A redis-py client on the broker (the primary, for a sentinel list); connection errors become BrokerUnavailable."""
    try:
        client = app.__dict__.get("_taskkit_redis")
        if client is None:
            client = app._taskkit_redis = _new_client(app)
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
    """One PING, once per app, so the first submit to a dead Redis fails within one timeout (and one with too few replicas at once)."""
    if app.__dict__.get("_taskkit_reachable"):
        return
    replicas = app.settings.broker.replicas_ack if hasattr(app, "settings") else 0
    with redis_client(app) as client:
        client.ping()
        connected = client.info("replication").get("connected_slaves", 0) if replicas else 0
    if connected < replicas:  # else every submit would wait out the timeout and fail
        raise unavailable(app, f"broker.replicas_ack={replicas} but the primary has {connected} connected replicas; start them or lower it")
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
