"""Time to load the run history into pandas: N events → events() and runs() DataFrames.

Writes N realistic events (sent/received/started/succeeded for N/4 runs, with arguments)
through taskkit's own recorder into a fresh redis-server on a free port, then reads them
back in a fresh process, as a notebook kernel would: events(), runs() (best of --rounds),
and the process's peak memory above what it held after importing taskkit. Baseline side by
side: the same rows read the obvious way, XRANGE into a list of dicts and then a DataFrame.

    python -m bench.history_load [-n 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import pandas as pd
import redis

from bench.common import redis_server, seed_history


def _app(url: str, n: int) -> Any:
    import taskkit
    from taskkit.config import load_settings

    env = {"TASKKIT_BROKER_URL": url, "TASKKIT_HISTORY_MAX_EVENTS": str(max(n, 1) * 2)}
    return taskkit.create_app(load_settings(env={**os.environ, **env}))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def read(url: str, rounds: int) -> dict[str, Any]:
    """events() and runs() in this process (best of rounds) and the peak memory they took."""
    import taskkit

    app = _app(url, 0)
    base = _rss_mb()
    events_s, runs_s = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        events = taskkit.events(app=app)
        events_s.append(time.perf_counter() - start)
        del events
        start = time.perf_counter()
        table = taskkit.runs(app=app)
        runs_s.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"events_s": min(events_s), "runs_s": min(runs_s), "runs": len(table), "peak_mb": peak - base}


def baseline(r: redis.Redis, key: str) -> float:
    """Seconds to read the stream the obvious way: XRANGE → a dict per event → DataFrame."""
    from taskkit.capture.rows import FIELDS, SEP, entry_rows

    start = time.perf_counter()
    rows, last = [], "-"
    while page := r.xrange(key, min=last, count=1_000):
        for _, fields in page:
            rows.extend(dict(zip(FIELDS, line.split(SEP), strict=True)) for line in entry_rows(fields).decode().split("\n"))
        last = b"(" + page[-1][0]
    pd.DataFrame(rows)
    return time.perf_counter() - start


def measure(n: int = 1_000_000, rounds: int = 3) -> dict[str, Any]:
    """Write n events, then read them (fresh process) and the baseline; plain numbers."""
    with redis_server() as (url, _):
        app = _app(url, n)
        write_s = seed_history(app, n)
        r = redis.Redis.from_url(url)
        entries = r.xlen(app.keys.runs())
        out = subprocess.run(
            [sys.executable, "-c", f"import json, bench.history_load as h; print(json.dumps(h.read({url!r}, {rounds})))"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result.update(events=n, entries=entries, write_s=write_s, baseline_s=baseline(r, app.keys.runs()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="events to write and read")
    parser.add_argument("--rounds", type=int, default=3, help="reads; the best is shown")
    args = parser.parse_args()
    m = measure(args.n, args.rounds)
    n = m["events"]
    print(f"\n{n:,} events ({m['runs']:,} runs) in {m['entries']:,} stream entries; reads best of {args.rounds}\n")
    print(f"{'':42} {'seconds':>8} {'events/s':>12}")
    print(f"{'write (recorder, batched)':42} {m['write_s']:>8.2f} {n / m['write_s']:>12,.0f}")
    print(f"{'events() -> DataFrame (typed columns)':42} {m['events_s']:>8.2f} {n / m['events_s']:>12,.0f}")
    print(f"{'runs() -> one row per run':42} {m['runs_s']:>8.2f} {n / m['runs_s']:>12,.0f}")
    print(f"{'baseline: XRANGE -> dicts -> DataFrame':42} {m['baseline_s']:>8.2f} {n / m['baseline_s']:>12,.0f}   (untyped)")
    print(f"{'ratio events() / baseline':42} {m['events_s'] / m['baseline_s']:>8.2f}")
    print(f"\npeak memory of the reads: {m['peak_mb']:,.0f} MB above the imported process")


if __name__ == "__main__":
    main()
