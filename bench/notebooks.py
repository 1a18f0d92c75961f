"""The notebook face's costs: one ClusterView refresh, and opening 03-analyse-runs on a big history.

1. Refresh: `taskkit.snapshot()` (what ClusterView reads each refresh) against what a
   dashboard built on Celery's own calls does side by side: five inspect broadcasts (stats,
   active, reserved, scheduled, active_queues, to every worker) and one LLEN per queue and
   priority level. Same Redis, 20 declared queues, two real workers, median of --rounds.
2. Open 03-analyse-runs (every cell, in a real kernel) with -n history events written
   through taskkit's recorder, window "7d" so it reads all of them.

    python -m bench.notebooks [--rounds 20] [-n 1000000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import redis
from nbclient import NotebookClient

import taskkit
from bench.common import redis_server, seed_history
from taskkit.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
QUEUES = 20


def baseline(app: taskkit.TaskkitApp, r: redis.Redis) -> None:
    inspect = app.control.inspect(timeout=1.0)
    for call in (inspect.stats, inspect.active, inspect.reserved, inspect.scheduled, inspect.active_queues):
        call()
    for name in app.topology.queues:
        for key in app.keys.queue_levels(name):
            r.llen(key)


def timed(call, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("-n", type=int, default=1_000_000, help="history events for the notebook")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="taskkit-bench-nb-"))
    config = work / "taskkit.toml"
    config.write_text("".join(f"[queues.q{i}]\npriority = {i % 10}\n" for i in range(QUEUES - 4)))  # + the 4 built-in ones
    with redis_server() as (url, _):
        env = {**os.environ, "TASKKIT_CONFIG": str(config), "TASKKIT_BROKER_URL": url, "TASKKIT_HISTORY_MAX_EVENTS": str(args.n * 2)}
        app = taskkit.create_app(load_settings(config, env=env))
        r = redis.Redis.from_url(url)
        worker = [sys.executable, "-m", "celery", "-A", "taskkit.app", "worker", "-c", "1", "--loglevel", "WARNING"]
        worker += ["-Q", ",".join(app.topology.queues)]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        workers = [subprocess.Popen([*worker, "-n", f"nb{i}@%h"], env=env, cwd=ROOT, start_new_session=True, **quiet) for i in range(2)]
        try:
            deadline = time.monotonic() + 60
            while len(taskkit.ping(app=app)) < 2:
                assert time.monotonic() < deadline, "workers did not start"
            snap = taskkit.snapshot(app=app)
            assert len(snap.workers) == 2 and len(snap.queues) == QUEUES
            ours = timed(lambda: taskkit.snapshot(app=app), args.rounds)
            parts = {k: [] for k in snap.cost}
            for _ in range(args.rounds):
                for k, v in taskkit.snapshot(app=app).cost.items():
                    parts[k].append(v * 1000)
            theirs = timed(lambda: baseline(app, r), max(3, args.rounds // 4))
            print(f"\nClusterView refresh: {QUEUES} queues, 2 workers, medians of {args.rounds} rounds\n")
            print(f"{'':58} {'ms':>8}")
            print(f"{'taskkit.snapshot() (one refresh)':58} {statistics.median(ours):>8.1f}")
            for k, v in parts.items():
                print(f"{'  ' + k:58} {statistics.median(v):>8.1f}")
            print(f"{'baseline: 5 inspect broadcasts + one LLEN per key':58} {statistics.median(theirs):>8.1f}")
            print(f"{'ratio baseline / taskkit':58} {statistics.median(theirs) / statistics.median(ours):>8.1f}")
            print("Redis round trips per refresh: 1 pipeline (counts, dead letters, recorder, worker names) + 2 (PING, INFO)")
            print(f"  + 3 (schedules) + 1 broadcast; baseline: {QUEUES * 10} LLEN + 5 broadcasts")

            write_s = seed_history(app, args.n)
            book = nbformat.read(ROOT / "notebooks" / "03-analyse-runs.ipynb", as_version=4)
            book.cells[1].source = 'since = "7d"'
            os.environ.update({k: env[k] for k in ("TASKKIT_CONFIG", "TASKKIT_BROKER_URL")})
            start = time.perf_counter()
            NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
            open_s = time.perf_counter() - start
            print(
                f"\n03-analyse-runs on {int(r.hget(app.keys.recorder_stats(), 'held')):,} history events (written in {write_s:.1f}s):"
                f" every cell in {open_s:.1f}s"
            )
        finally:
            for p in workers:
                os.killpg(p.pid, 15)
                p.wait(30)


if __name__ == "__main__":
    main()
