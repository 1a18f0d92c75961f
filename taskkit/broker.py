"""Reaching the broker's Redis for what taskkit reads itself (depths, health, cleanup)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from redis.backoff import NoBackoff
from redis.retry import Retry

from .config import mask_url
from .errors import BrokerUnavailable

REDIS_ERRORS = (OperationalError, redis.ConnectionError, redis.TimeoutError, OSError)


def unavailable(app: Celery, exc: BaseException) -> BrokerUnavailable:
    reason = (str(exc) or type(exc).__name__).rstrip(".")
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


def check_reachable(app: Celery) -> None:
    """One PING, once per app, so the first submit to a dead Redis fails within one timeout."""
    if app.__dict__.get("_taskkit_reachable"):
        return
    with redis_client(app) as client:
        client.ping()
    app._taskkit_reachable = True
