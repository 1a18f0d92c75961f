"""Beat at scale: taskkit's scheduler against Celery's default scheduler, same N entries.

Both schedulers hold N interval schedules (every EVERY seconds) whose due times are spread
evenly from one second after their run starts, so N / EVERY fall due each second. Both send
a no-op task through the same taskkit app settings to the same redis-server (started here),
and run in this process for SECONDS each, ticking exactly as `celery beat` does: call
tick(), sleep what it returns. Measured per scheduler:

- tick cost: wall time of each tick() call, sends included;
- send lag: for each send, from its due time to the moment the message is in Redis.

    python -m bench.schedules [-n 100000] [--every 3600] [--seconds 20]

Prints one table and taskkit's ratios to Celery's default scheduler (PersistentScheduler).
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


def bench_taskkit(app: Any, n: int, every: float, seconds: float, r: redis.Redis) -> dict[str, Any]:
    """Load n runtime schedules with the module's own writer (pipelined), then run its beat."""
    k = redbeat_keys(app)
    sched = interval(timedelta(seconds=every), app=app)
    definitions = [store.definition(f"s{i}", "bench.noop", sched, [], {}, {"queue": QUEUE}, True) for i in range(n)]
    scheduler = TaskkitMeasured(app=app, max_interval=5.0)
    scheduler.lags = []
    acquire_distributed_beat_lock(sender=SimpleNamespace(scheduler=scheduler))  # what beat_init does
    loaded = time.perf_counter()
    start = time.time() + 2.0 + n / 50_000  # time to load before the first one is due
    for lo in range(0, n, LOAD_BATCH):
        with r.pipeline(transaction=False) as pipe:
            for i, due in enumerate(due_times(n, every, start)[lo : lo + LOAD_BATCH], lo):
                last = datetime.fromtimestamp(due - every, UTC)
                pipe.hset(k.entry(f"s{i}"), mapping={"definition": definitions[i], "meta": store.meta(last, 1)})
                pipe.zadd(k.schedule, {k.entry(f"s{i}"): due})
            pipe.execute()
    setup = time.perf_counter() - loaded
    time.sleep(max(0.0, start - 1.0 - time.time()))
    ticks = run(scheduler, seconds)
    scheduler.close()
    return {"ticks": ticks, "lags": scheduler.lags, "setup": setup}


def bench_celery(app: Any, n: int, every: float, seconds: float, workdir: Path) -> dict[str, Any]:
    """The same entries in Celery's default scheduler (in memory, shelve-backed)."""
    app.conf.beat_schedule = {f"s{i}": {"task": "bench.noop", "schedule": every, "options": {"queue": QUEUE}} for i in range(n)}
    loaded = time.perf_counter()
    scheduler = CeleryMeasured(app=app, schedule_filename=str(workdir / "celerybeat-schedule"), max_interval=5.0)
    scheduler.lags = []
    start = time.time() + 2.0 + n / 50_000
    for entry, due in zip(scheduler.schedule.values(), due_times(n, every, start), strict=False):
        entry.last_run_at = datetime.fromtimestamp(due - every, UTC)
    # Build its heap now, as a running beat already has: startup is not part of a tick.
    scheduler.old_schedulers = copy.copy(scheduler.schedule)
    scheduler.populate_heap()
    setup = time.perf_counter() - loaded
    time.sleep(max(0.0, start - 1.0 - time.time()))
    ticks = run(scheduler, seconds)
    scheduler.close()
    return {"ticks": ticks, "lags": scheduler.lags, "setup": setup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="schedules each scheduler holds")
    parser.add_argument("--every", type=float, default=3600.0, help="their interval, seconds (n / every fall due each second)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each scheduler runs")
    args = parser.parse_args()

    results = {}
    with redis_server() as (url, workdir_name):
        workdir = Path(workdir_name)
        r = redis.Redis.from_url(url)
        settings = load_settings(env={"TASKKIT_BROKER_URL": url, **{k: v for k, v in os.environ.items() if k == "TASKKIT_HISTORY_ENABLED"}})
        apps = [taskkit.create_app(settings, main=f"bench-{kind}") for kind in ("taskkit", "celery")]
        for app in apps:
            app.task(name="bench.noop", ignore_result=True)(noop)
        results["taskkit (redbeat, batched)"] = bench_taskkit(apps[0], args.n, args.every, args.seconds, r)
        r.flushdb()
        results["celery default (Persistent)"] = bench_celery(apps[1], args.n, args.every, args.seconds, workdir)

    ms = 1000.0
    print(f"\n{args.n} interval schedules, every {args.every:g}s ({args.n / args.every:.1f} due/s), {args.seconds:g}s per scheduler\n")
    head = f"{'scheduler':28} {'setup s':>8} {'ticks':>6} {'tick p50':>9} {'tick p99':>9} {'sends':>6} {'lag p50':>9} {'lag p99':>9} {'lag max':>9}"
    print(head + "\n" + "-" * len(head))
    for name, res in results.items():
        t, lag = res["ticks"], res["lags"]
        print(
            f"{name:28} {res['setup']:>8.1f} {len(t):>6} {statistics.median(t) * ms:>7.2f}ms {quantile(t, 0.99) * ms:>7.2f}ms "
            f"{len(lag):>6} {quantile(lag, 0.5) * ms:>7.1f}ms {quantile(lag, 0.99) * ms:>7.1f}ms {max(lag, default=float('nan')) * ms:>7.1f}ms"
        )
    tk, cel = results.values()
    tick_ratio = statistics.median(cel["ticks"]) / statistics.median(tk["ticks"])
    lag_ratio = quantile(cel["lags"], 0.99) / quantile(tk["lags"], 0.99)
    print(f"\ncelery default / taskkit: tick p50 x{tick_ratio:.1f}, send lag p99 x{lag_ratio:.1f}")
    ok_tick, ok_lag = statistics.median(tk["ticks"]) < 0.010, quantile(tk["lags"], 0.99) < 0.100
    print(f"taskkit targets: tick p50 < 10 ms {'met' if ok_tick else 'MISSED'}, send lag p99 < 100 ms {'met' if ok_lag else 'MISSED'}")


if __name__ == "__main__":
    main()
