"""Time of one metrics scrape: 20 queues and 100,000 history events since the last scrape.

Seeds a fresh redis-server on a free port through taskkit's own recorder (events and the
tallies workers add with them), then times `taskkit.metrics` scrapes and counts their Redis
round trips. Baseline side by side: an exporter that derives the task counters by reading
the stream since its last scrape (XRANGE pages, split each row, count by task, queue and
state), what it has to do on every scrape at that rate.

    python -m bench.metrics [-n 100000] [--queues 20] [--tasks 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import Counter

import redis
from redis.connection import Connection

import taskkit
from bench.common import redis_server, seed_history
from taskkit import metrics
from taskkit.capture.rows import FIELDS, SEP, entry_rows
from taskkit.config import load_settings

REPEAT = 20


def round_trips(call) -> tuple[float, int]:
    """(seconds, Redis round trips) of one call: each send of a command or pipeline is one."""
    sent = 0
    original = Connection.send_packed_command

    def counting(self, *args, **kwargs):
        nonlocal sent
        sent += 1
        return original(self, *args, **kwargs)

    Connection.send_packed_command = counting
    try:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start, sent
    finally:
        Connection.send_packed_command = original


def stream_counts(r: redis.Redis, key: str) -> Counter:
    """The baseline: task counters from the stream read since the last scrape (here: all of it)."""
    counts: Counter = Counter()
    event, task, queue = FIELDS.index("event"), FIELDS.index("task"), FIELDS.index("queue")
    last = "-"
    while page := r.xrange(key, min=last, count=50_000):
        for _, fields in page:
            for line in entry_rows(fields).decode().split("\n"):
                row = line.split(SEP)
                counts[(row[task], row[queue], row[event])] += 1
        last = b"(" + page[-1][0]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="history events since the last scrape")
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=10)
    args = parser.parse_args()
    names = ["critical", "high", "default", "low"] + [f"q{i}" for i in range(args.queues - 4)]
    with redis_server() as (url, _), tempfile.NamedTemporaryFile("w", suffix=".toml") as toml:
        toml.write("".join(f"[queues.{q}]\npriority = 5\n" for q in names[4:]))
        toml.flush()
        app = taskkit.create_app(load_settings(toml.name, env={**os.environ, "TASKKIT_BROKER_URL": url}))
        seed_history(app, args.n, tasks=args.tasks, queues=tuple(names))
        r = redis.Redis.from_url(url)
        collector = metrics.Collector(app)
        list(collector.collect())  # warm: connections, scripts
        runs = [round_trips(lambda: list(collector.collect())) for _ in range(REPEAT)]
        scrape_s = statistics.median(s for s, _ in runs)
        trips = runs[0][1]
        base = [round_trips(lambda: stream_counts(r, app.keys.runs())) for _ in range(3)]
        base_s = statistics.median(s for s, _ in base)
        families = {m.name for m in collector.collect()}

    print(f"\n{args.n:,} history events since the last scrape, {len(names)} queues, {args.tasks} task names\n")
    print(f"{'':52} {'ms':>9} {'round trips':>12}")
    print(f"{'taskkit scrape (tallies + one pipeline)':52} {scrape_s * 1000:>9.1f} {trips:>12}")
    print(f"{'baseline: counters from the stream since last scrape':52} {base_s * 1000:>9.1f} {base[0][1]:>12}")
    print(f"{'ratio taskkit / baseline':52} {scrape_s / base_s:>9.3f}")
    print(f"\n{len(families)} metric families; median of {REPEAT} scrapes")


if __name__ == "__main__":
    main()
