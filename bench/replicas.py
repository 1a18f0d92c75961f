"""What durable submits cost: submit and submit_many with broker.replicas_ack = 1 against 0, side by side.

One fleet for both (a primary, one replica and a sentinel on loopback, tests/sentinels.py),
two apps on it that differ only in replicas_ack; no worker (messages wait). Rounds alternate
the order; the table shows medians.

    python -m bench.replicas [--loop 2000] [-n 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import taskkit
from taskkit.capture.recorder import recorder_for
from taskkit.config import load_settings
from tests.sentinels import RedisFleet


def measure(loop: int = 2_000, n: int = 50_000, rounds: int = 3) -> dict[str, Any]:
    """Tasks/s of a submit loop and of submit_many, with replicas_ack 0 and 1: medians and rounds."""
    got: dict[str, list[float]] = {f"{what} ack={ack}": [] for what in ("submit", "bulk") for ack in (0, 1)}
    with tempfile.TemporaryDirectory(prefix="taskkit-bench-") as d, RedisFleet(Path(d), sentinels=1) as fleet:
        apps = {}
        for ack in (0, 1):
            env = {**os.environ, **fleet.settings_env(), "TASKKIT_BROKER_REPLICAS_ACK": str(ack)}
            apps[ack] = taskkit.create_app(load_settings(env={**env, "TASKKIT_IMPORTS": "taskkit.tasks.science"}))
        calls = [[] for _ in range(n)]
        for r in range(rounds):
            for ack in (0, 1) if r % 2 == 0 else (1, 0):
                app = apps[ack]
                start = time.perf_counter()
                for _ in range(loop):
                    taskkit.submit("taskkit.ops.health", app=app)
                recorder_for(app).flush()
                got[f"submit ack={ack}"].append(loop / (time.perf_counter() - start))
                start = time.perf_counter()
                taskkit.submit_many("taskkit.ops.health", calls, app=app)
                recorder_for(app).flush()
                got[f"bulk ack={ack}"].append(n / (time.perf_counter() - start))
                fleet.client(fleet.primary()).flushdb()
    return {k: statistics.median(v) for k, v in got.items()} | {"rounds": got}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", type=int, default=2_000, help="tasks submitted one at a time")
    parser.add_argument("-n", type=int, default=50_000, help="tasks per submit_many")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    m = measure(args.loop, args.n, args.rounds)
    print(f"\n{args.loop:,} submits one at a time, {args.n:,} per submit_many; {args.rounds} rounds, medians (ranges)\n")
    print(f"{'':34} {'ack=0':>10} {'ack=1':>10} {'ratio':>7}")
    for what, label in (("submit", "submit, one at a time (tasks/s)"), ("bulk", "submit_many (tasks/s)")):
        a, b = m[f"{what} ack=0"], m[f"{what} ack=1"]
        print(f"{label:34} {a:>10,.0f} {b:>10,.0f} {b / a:>7.2f}")


if __name__ == "__main__":
    main()
