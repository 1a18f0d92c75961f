"""Beat at scale: taskkit's scheduler against Celery's default scheduler, same N entries.

Both schedulers hold N interval schedules (every EVERY seconds) whose due times are spread
evenly from one second after their run starts, so N / EVERY fall due each second. Both send
a no-op task through the same taskkit app settings to the same redis-server (started here),
and run in this process for SECONDS each, ticking exactly as `celery beat` does: call
tick(), sleep what it returns. Measured per scheduler:

- tick cost: wall time of each tick() call, sends included;
- send lag: for each send, from its due time to the moment the message is in Redis.

- seeding: taskkit's pipelined writes of the N schedules into Redis (Celery's: building its
  in-memory schedule and heap); memory: what they take (Redis `used_memory` for taskkit,
  the process' resident set for Celery's scheduler, which keeps them in memory).

    python -m bench.schedules [-n 100000] [--every 3600] [--seconds 20] [--rounds 1]
                              [--baseline-max N | --no-baseline]

Prints one table and taskkit's ratios to Celery's default scheduler (PersistentScheduler).
At 1,000,000 schedules Celery's scheduler takes about a minute to build, 3.5 GB and ~12 s per
tick; `--baseline-max N` skips it above N schedules (`--no-baseline`: always), and the table
says so. `measure()` returns the same figures as plain data (medians over the rounds).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import redis
from celery.beat import PersistentScheduler
from celery.schedules import schedule as interval
from redbeat.schedulers import acquire_distributed_beat_lock

import taskkit
from bench.common import redis_server
from taskkit import beat
from taskkit import schedule_store as store
from taskkit.config import load_settings
from taskkit.keys import redbeat_keys

QUEUE = "default"
LOAD_BATCH = 5000  # schedules written per pipeline when loading


def noop() -> None:
    return None


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Measured:
    """Mixed into both schedulers: records each send's lag from its due time."""

    lags: list[float]

    def due_of(self, entry: Any) -> float:
        raise NotImplementedError

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        result = super().apply_async(entry, producer=producer, advance=advance, **kwargs)  # type: ignore[misc]
        self.lags.append(time.time() - self.due_of(entry))
        return result


class TaskkitMeasured(Measured, beat.Scheduler):
    def due_of(self, entry: Any) -> float:
        return entry.due_at.timestamp()  # the due time beat fired it for


class CeleryMeasured(Measured, PersistentScheduler):
    def due_of(self, entry: Any) -> float:
        # Celery's tick hands apply_entry the entry before it advanced: due = last run + interval
        return (entry.last_run_at + entry.schedule.run_every).timestamp()


def run(scheduler: Any, seconds: float) -> list[float]:
    """Tick like celery beat's Service loop for `seconds`; returns each tick's duration."""
    scheduler.app.tasks["bench.noop"].apply_async(queue=QUEUE, producer=scheduler.producer)  # warm: connect, first-send work
    ticks = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        interval = scheduler.tick()
        ticks.append(time.perf_counter() - start)
        if interval and interval > 0:
            time.sleep(min(interval, max(0.0, end - time.monotonic())))
    return ticks


def due_times(n: int, every: float, start: float) -> list[float]:
    return [start + i * every / n for i in range(n)]


def rss() -> int:
    """This process' resident set, bytes (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_taskkit(app: Any, n: int, every: float, seconds: float, r: redis.Redis) -> dict[str, Any]:
    """Load n runtime schedules with the module's own writer (pipelined), then run its beat.

    Two passes, so the first due time is set once the bulk is in: each one's hash (definition
    and a run record an interval before its estimated due time; beat keeps the grid from the
    due time itself), then the sorted set of due times, which takes a few seconds at 1M.
    """
    k = redbeat_keys(app)
    sched = interval(timedelta(seconds=every), app=app)
    names = [f"s{i}" for i in range(n)]
    keys = [k.entry(name) for name in names]
    definitions = [store.definition(name, "bench.noop", sched, [], {}, {"queue": QUEUE}, True) for name in names]
    scheduler = TaskkitMeasured(app=app, max_interval=5.0)
    scheduler.lags = []
    acquire_distributed_beat_lock(sender=SimpleNamespace(scheduler=scheduler))  # what beat_init does
    memory = r.info("memory")["used_memory"]
    loaded = time.perf_counter()
    estimate = time.time() + n / 40_000  # about when the first one will be due
    for lo in range(0, n, LOAD_BATCH):
        with r.pipeline(transaction=False) as pipe:
            for i in range(lo, min(n, lo + LOAD_BATCH)):
                last = datetime.fromtimestamp(estimate + i * every / n - every, UTC)
                pipe.hset(keys[i], mapping={"definition": definitions[i], "meta": store.meta(last, 1)})
            pipe.execute()
    start = time.time() + 2.0 + n / 200_000  # time for the due times before the first one is due
    dues = due_times(n, every, start)
    for lo in range(0, n, LOAD_BATCH):
        hi = min(n, lo + LOAD_BATCH)
        r.zadd(k.schedule, dict(zip(keys[lo:hi], dues[lo:hi], strict=True)))
    setup = time.perf_counter() - loaded
    late = max(0.0, time.time() - (start - 1.0))  # > 0: some were overdue when the run began
    memory = r.info("memory")["used_memory"] - memory
    del definitions, dues
    time.sleep(max(0.0, start - 1.0 - time.time()))
    ticks = run(scheduler, seconds)
    scheduler.close()
    return {"ticks": ticks, "lags": scheduler.lags, "setup": setup, "late": late, "memory": memory}


def bench_celery(app: Any, n: int, every: float, seconds: float, workdir: Path) -> dict[str, Any]:
    """The same entries in Celery's default scheduler (in memory, shelve-backed)."""
    memory = rss()
    app.conf.beat_schedule = {f"s{i}": {"task": "bench.noop", "schedule": every, "options": {"queue": QUEUE}} for i in range(n)}
    loaded = time.perf_counter()
    scheduler = CeleryMeasured(app=app, schedule_filename=str(workdir / "celerybeat-schedule"), max_interval=5.0)
    scheduler.lags = []
    # what is left (due times, the heap) took about as long as building the entries at 100k-1M
    start = time.time() + 2.0 + 1.5 * (time.perf_counter() - loaded)
    for entry, due in zip(scheduler.schedule.values(), due_times(n, every, start), strict=False):
        entry.last_run_at = datetime.fromtimestamp(due - every, UTC)
    # Build its heap now, as a running beat already has: startup is not part of a tick.
    scheduler.old_schedulers = copy.copy(scheduler.schedule)
    scheduler.populate_heap()
    setup = time.perf_counter() - loaded
    late = max(0.0, time.time() - (start - 1.0))
    memory = rss() - memory
    time.sleep(max(0.0, start - 1.0 - time.time()))
    ticks = run(scheduler, seconds)
    scheduler.close()
    app.conf.beat_schedule = {}
    return {"ticks": ticks, "lags": scheduler.lags, "setup": setup, "late": late, "memory": memory}


def stats(res: dict[str, Any]) -> dict[str, Any]:
    """One scheduler's run as plain numbers (milliseconds, seconds, bytes)."""
    t, lag, ms = res["ticks"], res["lags"], 1000.0
    return {
        "setup_s": res["setup"],
        "late_s": res["late"],
        "memory_bytes": res["memory"],
        "ticks": len(t),
        "tick_p50_ms": statistics.median(t) * ms if t else float("nan"),
        "tick_p99_ms": quantile(t, 0.99) * ms,
        "sends": len(lag),
        "lag_p50_ms": quantile(lag, 0.5) * ms,
        "lag_p99_ms": quantile(lag, 0.99) * ms,
        "lag_max_ms": max(lag, default=float("nan")) * ms,
    }


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]} | {"rounds": rounds}


TARGET_TICK_P50_MS, TARGET_LAG_P99_MS = 10.0, 100.0


def measure(
    n: int = 100_000,
    *,
    every: float = 3600.0,
    seconds: float = 20.0,
    rounds: int = 1,
    baseline: bool = True,
    baseline_max: int | None = None,
) -> dict[str, Any]:
    """Run both schedulers `rounds` times (alternating which goes first) and return plain data.

    `taskkit` and `celery` hold the medians over the rounds of `stats()` (each with its
    per-round figures under "rounds"); `celery` is None when the baseline was skipped
    (`baseline=False`, or n > baseline_max), with the reason in `baseline_skipped`.
    """
    skipped = None
    if not baseline:
        skipped = "skipped (no baseline)"
    elif baseline_max is not None and n > baseline_max:
        skipped = f"skipped (n > baseline max {baseline_max:,})"
    runs: dict[str, list[dict[str, Any]]] = {"taskkit": [], "celery": []}
    with redis_server() as (url, workdir_name):
        workdir = Path(workdir_name)
        r = redis.Redis.from_url(url, socket_timeout=300)  # FLUSHDB of 1M schedules takes longer than redis-py's 5 s default
        settings = load_settings(env={"TASKKIT_BROKER_URL": url, **{k: v for k, v in os.environ.items() if k == "TASKKIT_HISTORY_ENABLED"}})
        apps = {kind: taskkit.create_app(settings, main=f"bench-{kind}") for kind in ("taskkit", "celery")}
        for app in apps.values():
            app.task(name="bench.noop", ignore_result=True)(noop)
        for i in range(rounds):
            order = ["taskkit", "celery"] if i % 2 == 0 else ["celery", "taskkit"]
            for kind in order:
                r.flushdb()
                if kind == "taskkit":
                    runs[kind].append(stats(bench_taskkit(apps[kind], n, every, seconds, r)))
                elif skipped is None:
                    (workdir / "celerybeat-schedule").unlink(missing_ok=True)
                    runs[kind].append(stats(bench_celery(apps[kind], n, every, seconds, workdir)))
    tk = medians(runs["taskkit"])
    cel = medians(runs["celery"]) if runs["celery"] else None
    ratios = None
    if cel is not None:
        ratios = {"tick_p50": cel["tick_p50_ms"] / tk["tick_p50_ms"], "lag_p99": cel["lag_p99_ms"] / tk["lag_p99_ms"]}
    return {
        "n": n,
        "every_s": every,
        "due_per_s": n / every,
        "seconds": seconds,
        "rounds": rounds,
        "taskkit": tk,
        "celery": cel,
        "baseline_skipped": skipped,
        "ratios": ratios,
        "targets": {
            "tick_p50_ms": TARGET_TICK_P50_MS,
            "lag_p99_ms": TARGET_LAG_P99_MS,
            "tick_met": tk["tick_p50_ms"] < TARGET_TICK_P50_MS,
            "lag_met": tk["lag_p99_ms"] < TARGET_LAG_P99_MS,
        },
    }


def table(result: dict[str, Any]) -> str:
    n, every = result["n"], result["every_s"]
    rounds = f", median of {result['rounds']} rounds" if result["rounds"] > 1 else ""
    lines = [
        f"\n{n} interval schedules, every {every:g}s ({result['due_per_s']:.1f} due/s), {result['seconds']:g}s per scheduler{rounds}\n"
    ]
    head = (
        f"{'scheduler':28} {'setup s':>8} {'late s':>7} {'memory':>9} {'ticks':>6} {'tick p50':>9} {'tick p99':>9} "
        f"{'sends':>6} {'lag p50':>9} {'lag p99':>9} {'lag max':>9}"
    )
    lines += [head, "-" * len(head)]
    rows = {"taskkit (redbeat, batched)": result["taskkit"], "celery default (Persistent)": result["celery"]}
    for name, s in rows.items():
        if s is None:
            lines.append(f"{name:28} {result['baseline_skipped']}")
            continue
        lines.append(
            f"{name:28} {s['setup_s']:>8.1f} {s['late_s']:>7.1f} {s['memory_bytes'] / 2**20:>7.0f}MB {s['ticks']:>6.0f} "
            f"{s['tick_p50_ms']:>7.2f}ms {s['tick_p99_ms']:>7.2f}ms {s['sends']:>6.0f} "
            f"{s['lag_p50_ms']:>7.1f}ms {s['lag_p99_ms']:>7.1f}ms {s['lag_max_ms']:>7.1f}ms"
        )
    lines.append("\nmemory: taskkit's schedules in Redis (used_memory); Celery's scheduler process (resident set)")
    if any(s is not None and s["late_s"] > 0 for s in rows.values()):
        lines.append("late s > 0: seeding ran past the first due time, so the run began with that many seconds overdue")
    if result["ratios"]:
        lines.append(
            f"celery default / taskkit: tick p50 x{result['ratios']['tick_p50']:.1f}, send lag p99 x{result['ratios']['lag_p99']:.1f}"
        )
    t = result["targets"]
    lines.append(
        f"taskkit targets: tick p50 < {t['tick_p50_ms']:g} ms {'met' if t['tick_met'] else 'MISSED'}, "
        f"send lag p99 < {t['lag_p99_ms']:g} ms {'met' if t['lag_met'] else 'MISSED'}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="schedules each scheduler holds")
    parser.add_argument("--every", type=float, default=3600.0, help="their interval, seconds (n / every fall due each second)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each scheduler runs")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each scheduler (alternating order); the table shows medians")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--baseline-max", type=int, default=None, metavar="N", help="skip Celery's scheduler when -n is above N")
    group.add_argument("--no-baseline", action="store_true", help="skip Celery's scheduler")
    args = parser.parse_args()
    result = measure(
        args.n, every=args.every, seconds=args.seconds, rounds=args.rounds, baseline=not args.no_baseline, baseline_max=args.baseline_max
    )
    print(table(result))


if __name__ == "__main__":
    main()
