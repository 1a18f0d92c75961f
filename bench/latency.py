"""Latency of one task at a time: enqueue → start and round trip, plain Celery against taskkit.

Variants side by side on one redis-server (started here on a free port), each with a real
`celery worker` (prefork, -c 1 and -c 2), one task in flight at a time after a warm-up:

- defaults   a plain Celery app with Celery's own defaults (only broker and result URLs set)
- plain      a plain Celery app with taskkit's Celery settings (bench.common.plain_celery_conf)
- taskkit    taskkit's app as shipped (taskkit.create_app)

With --ablation, taskkit as shipped with one setting changed at a time (see ABLATIONS), to
measure each setting's share of the latency.

The task records time.time() as it starts and returns it: enqueue → start is that minus the
time just before apply_async (client and worker share the host's clock); round trip is
apply_async until .get() has the result. Rounds rotate the order of the variants so machine
noise hits all alike; the table shows medians of the per-round p50/p99 and their ranges.

    python -m bench.latency [-n 300] [--rounds 3] [--concurrency 1 2] [--ablation] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from celery import Celery

import taskkit
from bench.common import plain_celery_conf, redis_server
from taskkit.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "default"
WORKER_APP = "bench.latency:app"  # what the workers run (-A)
WARMUP = 30  # tasks before measuring: pool children import, connect, fill caches

# name → (base app, TASKKIT_* overrides, Celery conf overrides merged after the app is built)
Variant = tuple[str, dict[str, str], dict[str, Any]]
MAIN: dict[str, Variant] = {
    "celery defaults": ("defaults", {}, {}),
    "plain, taskkit's settings": ("plain", {}, {}),
    "taskkit as shipped": ("taskkit", {}, {}),
}
# taskkit as shipped, one setting back to Celery's default (or off) at a time
ABLATIONS: dict[str, Variant] = {
    "- task_track_started": ("taskkit", {}, {"task_track_started": False}),
    "- worker_send_task_events": ("taskkit", {}, {"worker_send_task_events": False}),
    "- task_send_sent_event": ("taskkit", {}, {"task_send_sent_event": False}),
    "- task_acks_late": ("taskkit", {}, {"task_acks_late": False}),
    "- prefetch_multiplier 1 (4)": ("taskkit", {}, {"worker_prefetch_multiplier": 4}),
    "- priority (round_robin)": ("taskkit", {}, {"broker_transport_options": {"queue_order_strategy": "round_robin"}}),
    "- priority_steps (kombu's 4)": ("taskkit", {}, {"broker_transport_options": {"priority_steps": [0, 3, 6, 9]}}),
    "- history": ("taskkit", {"TASKKIT_HISTORY_ENABLED": "false"}, {}),
    "- leases": ("taskkit", {"TASKKIT_BROKER_LEASE": "0"}, {}),
    "- poison consumer": ("taskkit", {}, {"worker_consumer": "celery.worker.consumer:Consumer"}),
    "- result_extended": ("taskkit", {}, {"result_extended": False}),
    "- socket_timeout": (
        "taskkit",
        {},
        {"broker_transport_options": {"socket_timeout": None}, "redis_socket_timeout": None},
    ),
    "- backend health check": ("taskkit", {}, {"redis_backend_health_check_interval": None}),
    "- time limits": ("taskkit", {}, {"task_time_limit": None, "task_soft_time_limit": None}),
    "- max_*_per_child": ("taskkit", {}, {"worker_max_tasks_per_child": None, "worker_max_memory_per_child": None}),
    "- track_started, task events": ("taskkit", {}, {"task_track_started": False, "worker_send_task_events": False}),
}
VARIANTS: dict[str, Variant] = {**MAIN, **ABLATIONS}


def stamp() -> float:
    """The task: when it started, in UNIX seconds."""
    return time.time()


def make_app(name: str, url: str) -> Celery:
    """The app of variant `name`, without the benchmark's task."""
    base, env, overrides = VARIANTS[name]
    tag = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    if base == "defaults":
        app = Celery(f"bench-{tag}", set_as_current=False, broker=url, backend=url)
    elif base == "plain":
        app = Celery(f"bench-{tag}", set_as_current=False)
        conf = plain_celery_conf(load_settings(env={"TASKKIT_BROKER_URL": url, **env}))
        app.conf.update(conf)
    else:
        app = taskkit.create_app(load_settings(env={"TASKKIT_BROKER_URL": url, **env}), main=f"bench-{tag}")
    for key, value in overrides.items():  # option tables are merged, other values replaced
        current = app.conf.get(key)
        app.conf[key] = {**current, **value} if isinstance(value, dict) and isinstance(current, dict) else value
    return app


def build_app(name: str, url: str) -> Celery:
    """The app of variant `name`, with the task bench.stamp registered."""
    app = make_app(name, url)
    app.task(name="bench.stamp")(stamp)
    return app


if os.environ.get("BENCH_VARIANT"):  # a worker process started by run_variant(): -A bench.latency:app
    app = build_app(os.environ["BENCH_VARIANT"], os.environ["BENCH_REDIS_URL"])


def send(app: Celery, base: str) -> Any:
    if base == "taskkit":
        return taskkit.submit("bench.stamp", app=app)
    return app.tasks["bench.stamp"].apply_async(queue=QUEUE)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a worker we started (its whole process group: the pool children too)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_variant(name: str, url: str, n: int, concurrency: int, workdir: Path) -> dict[str, float]:
    """Start a worker for variant `name`, send WARMUP then n tasks one at a time; p50/p99 in ms."""
    base = VARIANTS[name][0]
    client = build_app(name, url)
    node = f"lat-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "BENCH_VARIANT": name, "BENCH_REDIS_URL": url}
    argv = [sys.executable, "-m", "celery", "-A", WORKER_APP, "worker", "-n", node, "-c", str(concurrency),
            "-Q", QUEUE, "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]  # fmt: skip
    log_path = workdir / "workers.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not client.control.ping(destination=[node], timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker for {name!r} did not start; see {log_path}")
        start_ms: list[float] = []
        trip_ms: list[float] = []
        publish_ms: list[float] = []
        for i in range(WARMUP + n):
            wall, t0 = time.time(), time.perf_counter()
            result = send(client, base)
            t1 = time.perf_counter()
            started = result.get(timeout=30)
            t2 = time.perf_counter()
            if i >= WARMUP:
                start_ms.append((started - wall) * 1000)
                trip_ms.append((t2 - t0) * 1000)
                publish_ms.append((t1 - t0) * 1000)
    finally:
        stop(proc)
        client.close()
    return {
        "start_p50": percentile(start_ms, 0.5),
        "start_p99": percentile(start_ms, 0.99),
        "trip_p50": percentile(trip_ms, 0.5),
        "trip_p99": percentile(trip_ms, 0.99),
        "publish_p50": percentile(publish_ms, 0.5),
    }


METRICS = ("start_p50", "start_p99", "trip_p50", "trip_p99", "publish_p50")


def measure(
    n: int = 300, rounds: int = 3, concurrency: tuple[int, ...] = (1, 2), variants: tuple[str, ...] = tuple(MAIN)
) -> dict[str, Any]:
    """Median over rounds of each variant's p50/p99 (ms), with per-round ranges, as plain data:
    {"n", "rounds", "results": {concurrency: {variant: {metric: median}}}, "ranges": {… (min, max)}}."""
    per_round: dict[int, dict[str, list[dict[str, float]]]] = {c: {v: [] for v in variants} for c in concurrency}
    workdir = Path(tempfile.mkdtemp(prefix="taskkit-latency-"))
    with redis_server() as (url, _):
        order = list(variants)
        for i in range(rounds):
            for c in concurrency:
                k = i % len(order)
                for name in order[k:] + order[:k]:  # rotate the order
                    per_round[c][name].append(run_variant(name, url, n, c, workdir))
    results = {c: {v: {m: statistics.median(r[m] for r in rs) for m in METRICS} for v, rs in vs.items()} for c, vs in per_round.items()}
    ranges = {c: {v: {m: (min(r[m] for r in rs), max(r[m] for r in rs)) for m in METRICS} for v, rs in vs.items()} for c, vs in per_round.items()}  # fmt: skip
    return {"n": n, "rounds": rounds, "results": results, "ranges": ranges}


def report(data: dict[str, Any]) -> None:
    print(f"\n{data['n']} tasks one at a time x {data['rounds']} rounds (ms; medians of per-round p50/p99, ranges)")
    for c, table in data["results"].items():
        ranges = data["ranges"][c]
        print(f"\nprefork -c {c}")
        print(
            f"{'':32} {'start p50':>9} {'p99':>6} {'trip p50':>9} {'p99':>6} {'publish':>8}   {'start p50 range':>15} {'trip p50 range':>14}"
        )
        for name, row in table.items():
            lo, hi = ranges[name]["start_p50"]
            tlo, thi = ranges[name]["trip_p50"]
            print(
                f"{name:32} {row['start_p50']:>9.2f} {row['start_p99']:>6.2f} {row['trip_p50']:>9.2f} {row['trip_p99']:>6.2f}"
                f" {row['publish_p50']:>8.2f}   {lo:>7.2f}-{hi:<7.2f} {tlo:>6.2f}-{thi:<7.2f}"
            )
        base = table.get("celery defaults")
        shipped = table.get("taskkit as shipped")
        if base and shipped:
            print(
                f"{'taskkit / celery defaults':32} {shipped['start_p50'] / base['start_p50']:>9.2f} "
                f"{shipped['start_p99'] / base['start_p99']:>6.2f} {shipped['trip_p50'] / base['trip_p50']:>9.2f} "
                f"{shipped['trip_p99'] / base['trip_p99']:>6.2f}"
            )
        if shipped:
            for name in (v for v in table if v in ABLATIONS):
                print(f"  share of {name[2:]:30} {shipped['start_p50'] - table[name]['start_p50']:>+7.2f} ms of start p50")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="measured tasks per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ablation", action="store_true", help="also taskkit with one setting changed at a time")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="just these variants (names as in the table)")
    args = parser.parse_args(argv)
    variants = tuple(args.only) if args.only else tuple(MAIN) + (tuple(ABLATIONS) if args.ablation else ())
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    data = measure(args.n, args.rounds, tuple(args.concurrency), variants)
    report(data)
    return data


if __name__ == "__main__":
    main()
