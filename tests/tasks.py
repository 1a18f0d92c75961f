"""Tasks the tests submit to real workers (importable, so worker processes load them)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import redis
from celery import current_app, shared_task

from taskkit import final_failure

log = logging.getLogger("tests.tasks")


def _redis() -> redis.Redis:
    """The broker's Redis (a sentinel list's primary, through taskkit's client)."""
    from taskkit.broker import redis_client

    with redis_client(current_app) as client:
        return client


@shared_task(name="tests.add")
def add(x: int, y: int) -> int:
    return x + y


@shared_task(name="tests.record")
def record(key: str, tag: Any) -> None:
    _redis().rpush(key, str(tag))


@shared_task(name="tests.note")
def note(key: str, tag: Any) -> None:
    """tests.record into the Redis at $TESTS_NOTES_URL: a store that outlives the broker's restarts."""
    redis.Redis.from_url(os.environ["TESTS_NOTES_URL"]).rpush(key, str(tag))


@shared_task(name="tests.mark")
def mark(key: str, tag: Any) -> None:
    """tests.note of "TAG TIME": when the run happened, by the worker's clock."""
    note(key, f"{tag} {time.time()!r}")


@shared_task(name="tests.note_after")
def note_after(key: str, tag: Any, seconds: float) -> None:
    """tests.note after a pause: a task that is running when the test kills its process."""
    time.sleep(seconds)
    note(key, tag)


@shared_task(name="tests.flaky", bind=True, retry_on=("ValueError",), max_retries=3, retry_backoff=0.25, retry_jitter=False)
def flaky(self: Any, key: str, failures: int) -> int:
    """Fails `failures` times, recording the time of every attempt."""
    attempts = _redis().rpush(key, repr(time.time()))
    if attempts <= failures:
        raise ValueError(f"attempt {attempts} fails")
    return attempts


@shared_task(name="tests.fails_with", bind=True)
def fails_with(self: Any, key: str, exc_name: str) -> None:
    _redis().rpush(key, repr(time.time()))
    raise {"ConnectionError": ConnectionError, "KeyError": KeyError}[exc_name]("boom")


@shared_task(name="tests.slow_once", bind=True)
def slow_once(self: Any, key: str, seconds: float) -> str:
    """The first attempt records where it runs and sleeps; later attempts finish at once."""
    r = _redis()
    first = r.rpush(key, f"{self.request.hostname} {os.getpid()} {time.time()}") == 1
    if first:
        time.sleep(seconds)
    return self.request.hostname


@shared_task(name="tests.progressing", bind=True)
def progressing(self: Any, steps: int, pause: float) -> int:
    for i in range(1, steps + 1):
        time.sleep(pause)
        self.progress(i, steps, stage="counting")
    return steps


@shared_task(name="tests.says")
def says(text: str) -> str:
    log.warning("task says %s", text)
    return text


@shared_task(name="tests.fails_until", bind=True)
def fails_until(self: Any, key: str) -> str:
    """Counts its runs in `key`; fails until `key:fixed` exists (a dead letter to replay)."""
    r = _redis()
    r.incr(key)
    if not r.exists(f"{key}:fixed"):
        raise KeyError(f"{key} not fixed yet")
    return self.request.delivery_info.get("routing_key", "")


@shared_task(name="tests.sleeps")
def sleeps(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@shared_task(name="tests.on_low", queue="low")
def on_low() -> str:
    return "low"


@shared_task(name="tests.urgent", priority=2)
def urgent() -> str:
    return "urgent"


@shared_task(name="tests.stubborn")
def stubborn(seconds: float) -> None:
    """Ignores the soft time limit, so only the hard one can stop it."""
    from celery.exceptions import SoftTimeLimitExceeded

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            pass


def _on_final_failure(sender: Any, task_id: str, exc: BaseException, **_: Any) -> None:
    _redis().rpush(f"final:{task_id}", type(exc).__name__)


final_failure.connect(_on_final_failure, weak=False)


@shared_task(name="tests.blocker", bind=True)
def blocker(self: Any, key: str, timeout: float = 30) -> str:
    """Records its start in `key`:started, waits until the test pushes to `key`:go, records `key`:done."""
    r = _redis()
    r.rpush(f"{key}:started", f"{self.request.hostname} {os.getpid()}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not r.blpop([f"{key}:go"], 1):  # short waits: the client has a socket timeout
        pass
    r.rpush(f"{key}:done", self.request.hostname)
    return self.request.hostname


@shared_task(name="tests.whoami", bind=True)
def whoami(self: Any, key: str) -> None:
    """Records "<worker hostname> <time>" in `key`: who ran it, and when."""
    _redis().rpush(key, f"{self.request.hostname} {time.time()!r}")


_hoard: list[bytes] = []  # what tests.grow keeps: a leak, on purpose


@shared_task(name="tests.pid")
def pid(grow_mb: int = 0) -> int:
    """The pool process's pid; with grow_mb, first keeps that many MB alive in the process (a leak)."""
    if grow_mb:
        _hoard.append(b"\x01" * (grow_mb * 2**20))  # written, so resident (bytes(n) may stay untouched zero pages)
    return os.getpid()


@shared_task(name="tests.connections_in_use", bind=True)
def connections_in_use(self: Any) -> int:
    """Result-store connections this pool process holds right now (its own STARTED write is one)."""
    return len(self.backend.client.connection_pool._in_use_connections)
