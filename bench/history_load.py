"""Time to load the run history into pandas: N events → events() and runs() DataFrames.

Writes N realistic events (sent/received/started/succeeded for N/4 runs, with arguments)
through taskkit's own recorder into a fresh redis-server on a free port, then times
reading them back. Baseline side by side: the same rows read the obvious way, XRANGE
into a list of dicts and then a DataFrame.

    python -m bench.history_load [-n 1000000]
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import redis

import taskkit
from bench.common import redis_server, seed_history
from taskkit.capture.rows import FIELDS, SEP
from taskkit.config import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="events to write and read")
    args = parser.parse_args()
    with redis_server() as (url, _):
        r = redis.Redis.from_url(url)
        env = {"TASKKIT_BROKER_URL": url, "TASKKIT_HISTORY_MAX_EVENTS": str(args.n * 2)}
        app = taskkit.create_app(load_settings(env={**os.environ, **env}))
        write_s = seed_history(app, args.n)
        n = r.xlen(app.keys.runs())

        start = time.perf_counter()
        events = taskkit.events(app=app)
        events_s = time.perf_counter() - start
        start = time.perf_counter()
        table = taskkit.runs(app=app)
        runs_s = time.perf_counter() - start

        start = time.perf_counter()
        rows, last = [], "-"
        while page := r.xrange(app.keys.runs(), min=last, count=50_000):
            rows.extend(dict(zip(FIELDS, fields[b"v"].decode().split(SEP), strict=True)) for _, fields in page)
            last = b"(" + page[-1][0]
        naive = pd.DataFrame(rows)
        naive_s = time.perf_counter() - start

    print(f"\n{n:,} events ({len(table):,} runs) in the run-history stream\n")
    print(f"{'':42} {'seconds':>8} {'events/s':>12}")
    print(f"{'write (recorder, batched)':42} {write_s:>8.2f} {n / write_s:>12,.0f}")
    print(f"{'events() -> DataFrame (typed columns)':42} {events_s:>8.2f} {n / events_s:>12,.0f}")
    print(f"{'runs() -> one row per run':42} {runs_s:>8.2f} {n / runs_s:>12,.0f}")
    print(f"{'baseline: XRANGE -> dicts -> DataFrame':42} {naive_s:>8.2f} {n / naive_s:>12,.0f}   (untyped)")
    print(f"{'ratio events() / baseline':42} {events_s / naive_s:>8.2f}")
    assert len(events) == len(naive) == n, (len(events), len(naive), n)


if __name__ == "__main__":
    main()
