"""What the benchmarks share: a throwaway redis-server on a free loopback port, and a history to read."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def redis_server() -> Iterator[tuple[str, str]]:
    """(url, data directory) of a fresh redis-server, no persistence, stopped on exit."""
    workdir = tempfile.mkdtemp(prefix="taskkit-bench-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [
        shutil.which("redis-server") or "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
    ]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", workdir
    finally:
        server.terminate()
        server.wait()


def plain_celery_conf(settings: Any) -> dict[str, Any]:
    """taskkit's Celery settings for a plain Celery app: what only a taskkit app has taken out
    (its router, its worker consumer, its client reuse in kombu's channels)."""
    from taskkit.app import celery_config
    from taskkit.transport import REUSE

    conf = celery_config(settings)
    conf.pop("task_routes", None)  # taskkit's router; a plain app gets queue= instead
    conf.pop("worker_consumer", None)  # poison messages, batched task events: what taskkit adds
    conf["broker_transport_options"] = {k: v for k, v in conf["broker_transport_options"].items() if k != REUSE}
    return conf


def seed_history(app: Any, n: int, *, tasks: int = 1, queues: tuple[str, ...] = ("default",)) -> float:
    """Write n realistic events (sent, received, started, succeeded for n/4 runs, with arguments
    and the tallies workers add) through taskkit's own recorder; returns the seconds it took."""
    from taskkit.capture import tallies
    from taskkit.capture.recorder import recorder_for

    rec = recorder_for(app)
    start = time.perf_counter()
    for i in range(n // 4):
        task, queue = f"reports.build{i % tasks or ''}", queues[i % len(queues)]
        common = {"task": task, "id": str(uuid.uuid4()), "queue": queue, "priority": 5}
        rec.record("sent", args=[i, "2026-11-22"], kwargs={"region": "eu"}, index=True, attempt=1, **common)
        rec.record("received", args=[i, "2026-11-22"], kwargs={"region": "eu"}, index=True, worker="w1@host", attempt=1, **common)
        rec.record("started", worker="w1@host", attempt=1, tally=tallies.fields("started", task, queue, wait=0.02 * (i % 50)), **common)
        done = tallies.fields("succeeded", task, queue, runtime=0.01 * (i % 300))
        rec.record("succeeded", worker="w1@host", attempt=1, result_size=120, tally=done, **common)
        if i % 5000 == 0:
            rec.flush()
    rec.flush()
    return time.perf_counter() - start
