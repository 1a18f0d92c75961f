"""Publish and drain throughput: plain Celery, taskkit without and with the run history.

Three apps with exactly the same Celery settings (taskkit's), the same redis-server
(started here on a free port), the same no-op task with results ignored, and a prefork
worker with the same concurrency:

- plain    a plain Celery app
- quiet    taskkit's app with history.enabled = false (what taskkit itself adds)
- taskkit  taskkit's app as shipped, recording every run's events

Rounds rotate the order so machine noise hits all alike; the table shows medians.

    python -m bench.throughput [-n 5000] [--rounds 5] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from celery import Celery

import taskkit
from bench.common import plain_celery_conf, redis_server
from taskkit.capture.recorder import recorder_for
from taskkit.config import load_settings
from taskkit.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "default"


def noop() -> None:
    return None


VARIANTS = ("plain", "quiet", "taskkit")


def build_apps(url: str) -> dict[str, Celery]:
    """The three apps of VARIANTS; all share taskkit's Celery settings."""
    settings = load_settings(env={"TASKKIT_BROKER_URL": url})
    quiet_settings = load_settings(env={"TASKKIT_BROKER_URL": url, "TASKKIT_HISTORY_ENABLED": "false"})
    apps = {
        "taskkit": taskkit.create_app(settings, main="bench-taskkit"),
        "quiet": taskkit.create_app(quiet_settings, main="bench-quiet"),
        "plain": Celery("bench-plain", set_as_current=False),
    }
    conf = plain_celery_conf(settings)
    apps["plain"].conf.update(conf)
    for app in apps.values():
        app.task(name="bench.noop", ignore_result=True)(noop)
    return apps


if os.environ.get("BENCH_REDIS_URL"):  # a worker process started by main(): -A bench.throughput:<variant>_app
    _apps = build_apps(os.environ["BENCH_REDIS_URL"])
    plain_app, quiet_app, taskkit_app = _apps["plain"], _apps["quiet"], _apps["taskkit"]


def publish(apps: dict[str, Celery], kind: str, n: int) -> float:
    app = apps[kind]
    if kind == "plain":
        task = app.tasks["bench.noop"]
        start = time.perf_counter()
        for _ in range(n):
            task.apply_async(queue=QUEUE)
    else:
        start = time.perf_counter()
        for _ in range(n):
            taskkit.submit("bench.noop", app=app)
    rate = n / (time.perf_counter() - start)
    recorder = recorder_for(app) if kind != "plain" else None
    if recorder is not None:
        recorder.flush()  # its writes happened in the background; make sure they are in
    return rate


def waiting(r: redis.Redis, keys: Keys) -> int:
    pipe = r.pipeline(transaction=False)
    for key in keys.queue_levels(QUEUE):
        pipe.llen(key)
    pipe.hlen(keys.unacked())  # delivered, not yet acknowledged
    return sum(pipe.execute())


def drain(apps: dict[str, Celery], kind: str, n: int, concurrency: int, r: redis.Redis, workdir: Path) -> tuple[float, float]:
    """Start a worker with the queue paused, publish n, then time it from resume until all are done."""
    app, keys = apps[kind], apps["taskkit"].keys
    node = f"{kind}-bench@{socket.gethostname()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "celery", "-A", f"bench.throughput:{kind}_app", "worker", "-n", node, "-c", str(concurrency),
            "-Q", QUEUE, "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]  # fmt: skip
    with open(workdir / f"{kind}.log", "ab") as log:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not app.control.ping(destination=[node], timeout=0.5):
            if time.monotonic() > deadline:
                raise SystemExit(f"worker {kind} did not start; see {workdir / (kind + '.log')}")
        app.control.cancel_consumer(QUEUE, destination=[node], reply=True)
        rate = publish(apps, kind, n)
        assert waiting(r, keys) == n, "the paused worker consumed while we published"
        start = time.perf_counter()
        app.control.add_consumer(QUEUE, destination=[node], reply=False)
        while waiting(r, keys):
            time.sleep(0.005)
        drained = n / (time.perf_counter() - start)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    return rate, drained


def measure(n: int = 5000, rounds: int = 5, concurrency: int = 2) -> dict[str, Any]:
    """Publish/s and drain/s of every variant, rounds in rotating order: medians and per-round values."""
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in VARIANTS}
    with redis_server() as (url, workdir):
        os.environ["BENCH_REDIS_URL"] = url  # the workers build their apps from it
        r = redis.Redis.from_url(url)
        apps = build_apps(url)
        for i in range(rounds):
            for kind in VARIANTS[i % 3 :] + VARIANTS[: i % 3]:  # rotate the order
                r.flushdb()
                results[kind].append(drain(apps, kind, n, concurrency, r, Path(workdir)))
    out: dict[str, Any] = {}
    for kind, v in results.items():
        pubs, drains = [p for p, _ in v], [d for _, d in v]
        out[kind] = {"publish": statistics.median(pubs), "drain": statistics.median(drains), "publish_rounds": pubs, "drain_rounds": drains}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    m = measure(args.n, args.rounds, args.concurrency)
    print(f"\n{args.n} no-op tasks x {args.rounds} rounds, prefork -c {args.concurrency}, results ignored (medians)\n")
    print(f"{'':22} {'publish/s':>10} {'drain/s':>10}   {'publish range':>15} {'drain range':>13}")
    for kind in VARIANTS:
        pubs, drains = m[kind]["publish_rounds"], m[kind]["drain_rounds"]
        spread = f"{min(pubs):>7.0f}-{max(pubs):<7.0f} {min(drains):>6.0f}-{max(drains):<6.0f}"
        print(f"{kind:22} {m[kind]['publish']:>10.0f} {m[kind]['drain']:>10.0f}   {spread}")
    for label, a, b, target in (
        ("quiet / plain", "quiet", "plain", "taskkit's own overhead"),
        ("taskkit / quiet", "taskkit", "quiet", "the run-history recorder"),
        ("taskkit / plain", "taskkit", "plain", "as shipped, target >= 1.0 publish, >= 0.95 drain"),
    ):
        print(f"{label:22} {m[a]['publish'] / m[b]['publish']:>10.3f} {m[a]['drain'] / m[b]['drain']:>10.3f}   ({target})")


if __name__ == "__main__":
    main()
