"""Bulk submission: submit_many of N tasks against a loop of submit, side by side in one run.

A fresh redis-server on a free port, no worker (messages wait); the loop baseline submits
`--loop` tasks one at a time (what a notebook does without submit_many). History on, as shipped.

    python -m bench.bulk [-n 100000] [--loop 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import taskkit
from bench.common import redis_server
from taskkit.capture.recorder import recorder_for
from taskkit.config import load_settings


def measure(n: int = 100_000, loop: int = 2_000, rounds: int = 3) -> dict[str, Any]:
    """Tasks/s of submit_many and of a submit loop, alternating order: medians and per-round values."""
    bulk, looped = [], []
    with redis_server() as (url, _):
        env = {**os.environ, "TASKKIT_BROKER_URL": url, "TASKKIT_IMPORTS": "taskkit.tasks.science"}
        app = taskkit.create_app(load_settings(env=env))
        calls = [[] for _ in range(n)]
        for r in range(rounds):  # alternate the order: per-round ranges are wide on a small machine
            for which in ("bulk", "loop") if r % 2 == 0 else ("loop", "bulk"):
                start = time.perf_counter()
                if which == "bulk":
                    taskkit.submit_many("taskkit.ops.health", calls, app=app)
                    recorder_for(app).flush()
                    bulk.append(n / (time.perf_counter() - start))
                else:
                    for _ in range(loop):
                        taskkit.submit("taskkit.ops.health", app=app)
                    recorder_for(app).flush()
                    looped.append(loop / (time.perf_counter() - start))
            app.backend.client.flushdb()
    return {"bulk": statistics.median(bulk), "loop": statistics.median(looped), "bulk_rounds": bulk, "loop_rounds": looped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="tasks per submit_many")
    parser.add_argument("--loop", type=int, default=2_000, help="tasks submitted one at a time (the baseline)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    m = measure(args.n, args.loop, args.rounds)
    bulk, loop = m["bulk_rounds"], m["loop_rounds"]
    print(f"\n{args.n:,} tasks per submit_many, {args.loop:,} one at a time; {args.rounds} rounds, medians (ranges)\n")
    print(f"{'':40} {'tasks/s':>10}  range")
    print(f"{'submit_many (pipelined batches)':40} {m['bulk']:>10,.0f}  {min(bulk):,.0f}-{max(bulk):,.0f}")
    print(f"{'baseline: submit in a loop':40} {m['loop']:>10,.0f}  {min(loop):,.0f}-{max(loop):,.0f}")
    print(f"{'ratio submit_many / loop':40} {m['bulk'] / m['loop']:>10.1f}")


if __name__ == "__main__":
    main()
