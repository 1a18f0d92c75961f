"""Publish and drain throughput: taskkit's app against a plain Celery app, side by side.

Both apps get the same Celery settings (taskkit's), the same redis-server (started here on
a free port), the same no-op task with results ignored, and a prefork worker with the
same concurrency. Rounds alternate between the two so machine noise hits both alike.

    python bench/throughput.py [-n 5000] [--rounds 3] [--concurrency 2]

Prints a table of publish/s and drain/s for each, and taskkit's ratio to plain Celery.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from celery import Celery

import taskkit
from taskkit.app import celery_config
from taskkit.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "default"


def noop() -> None:
    return None


def build_apps(url: str) -> tuple[Celery, Celery]:
    """taskkit's app, and a plain Celery app given exactly the same Celery settings."""
    settings = load_settings(env={"TASKKIT_BROKER_URL": url})
    tk = taskkit.create_app(settings, main="bench-taskkit")
    plain = Celery("bench-plain", set_as_current=False)
    conf = celery_config(settings)
    conf.pop("task_routes", None)  # taskkit's router; plain Celery gets queue= instead
    plain.conf.update(conf)
    for app in (tk, plain):
        app.task(name="bench.noop", ignore_result=True)(noop)
    return tk, plain


if os.environ.get("BENCH_REDIS_URL"):  # a worker process started by main()
    taskkit_app, plain_app = build_apps(os.environ["BENCH_REDIS_URL"])


def publish(kind: str, n: int) -> float:
    if kind == "taskkit":
        start = time.perf_counter()
        for _ in range(n):
            taskkit.submit("bench.noop", app=taskkit_app)
    else:
        task = plain_app.tasks["bench.noop"]
        start = time.perf_counter()
        for _ in range(n):
            task.apply_async(queue=QUEUE)
    return n / (time.perf_counter() - start)


def waiting(r: redis.Redis) -> int:
    pipe = r.pipeline(transaction=False)
    for key in taskkit_app.keys.queue_levels(QUEUE):
        pipe.llen(key)
    pipe.hlen("unacked")  # kombu's hash of delivered, not yet acknowledged messages
    return sum(pipe.execute())


def drain(kind: str, n: int, concurrency: int, r: redis.Redis, workdir: Path) -> tuple[float, float]:
    """Start a worker with the queue paused, then time it from resume until all n are done."""
    app = taskkit_app if kind == "taskkit" else plain_app
    node = f"{kind}-bench@{socket.gethostname()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            f"bench.throughput:{kind}_app",
            "worker",
            "-n",
            node,
            "-c",
            str(concurrency),
            "-Q",
            QUEUE,
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=open(workdir / f"{kind}.log", "ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not app.control.ping(destination=[node], timeout=0.5):
            if time.monotonic() > deadline:
                raise SystemExit(f"worker {kind} did not start; see {workdir / (kind + '.log')}")
        app.control.cancel_consumer(QUEUE, destination=[node], reply=True)
        rate = publish(kind, n)
        assert waiting(r) == n, "the paused worker consumed while we published"
        start = time.perf_counter()
        app.control.add_consumer(QUEUE, destination=[node], reply=False)
        while waiting(r):
            time.sleep(0.005)
        drained = n / (time.perf_counter() - start)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    return rate, drained


def main() -> None:
    global taskkit_app, plain_app
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="taskkit-bench-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
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
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = os.environ["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    try:
        r = redis.Redis.from_url(url)
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        taskkit_app, plain_app = build_apps(url)
        results: dict[str, list[tuple[float, float]]] = {"plain": [], "taskkit": []}
        for i in range(args.rounds):
            for kind in ("plain", "taskkit") if i % 2 == 0 else ("taskkit", "plain"):
                r.flushdb()
                results[kind].append(drain(kind, args.n, args.concurrency, r, workdir))
    finally:
        server.terminate()
        server.wait()
    med = {k: (statistics.median(p for p, _ in v), statistics.median(d for _, d in v)) for k, v in results.items()}
    print(f"\n{args.n} no-op tasks x {args.rounds} rounds, prefork -c {args.concurrency}, results ignored (medians)\n")
    print(f"{'':10} {'publish/s':>10} {'drain/s':>10}")
    for kind in ("plain", "taskkit"):
        print(f"{kind:10} {med[kind][0]:>10.0f} {med[kind][1]:>10.0f}")
    ratio = (med["taskkit"][0] / med["plain"][0], med["taskkit"][1] / med["plain"][1])
    print(f"{'ratio':10} {ratio[0]:>10.3f} {ratio[1]:>10.3f}   (taskkit / plain Celery; target >= 0.95)")


if __name__ == "__main__":
    main()
