"""The fault suite: real processes killed and restarted while work flows, with counts.

Each loop runs a short version by default; `pytest --long-faults` runs the full one (the
counts the README quotes).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
import time

import pandas as pd
import redis

import taskkit
from taskkit.devstack import _group_members

from .conftest import Stack, free_port, pings, wait_until

FAST_BEAT = """
[beat]
max_interval = "0.2s"
lock_timeout = "1.5s"
"""


def _sent(stack: Stack, queue: str) -> int:
    return sum(stack.redis.llen(key) for key in stack.app.keys.queue_levels(queue))


def test_a_warm_beat_stop_loses_no_run(make_stack, repetitions):
    """SIGTERM lands at random points of busy ticks: every run beat recorded was sent."""
    stack = make_stack(FAST_BEAT)
    names = [f"busy{i}" for i in range(40)]
    for name in names:
        taskkit.add_schedule(name, "tests.record", every="0.1s", args=[name, 1], app=stack.app)
    reps = repetitions(5, 20)
    rng = random.Random(11)

    def recorded() -> int:
        return sum(s.total_run_count for s in taskkit.list_schedules(app=stack.app))

    for rep in range(reps):
        beat = stack.start_beat(f"beat{rep}")
        first = recorded()
        wait_until(lambda first=first: recorded() > first + 40, 10, "busy ticks")
        time.sleep(rng.random() * 0.3)
        beat.send_signal(rng.choice([signal.SIGTERM, signal.SIGINT]))
        beat.wait(10)  # a warm stop: it exits by itself
    total = recorded()
    assert total > reps * 40
    assert _sent(stack, "default") == total
    print(f"{reps} warm stops of a busy beat: {total} runs recorded, {total} sent")


def test_a_killed_workers_run_shows_lost_then_joins_its_redelivery(make_stack):
    stack = make_stack("[broker]\nlease = 3\n")
    doomed = stack.start_worker("doomed", concurrency=1)
    res = taskkit.submit("tests.slow_once", args=["lost", 120], app=stack.app)

    def run() -> dict:
        rows = taskkit.runs(app=stack.app)
        rows = rows[rows["id"] == res.id]
        return rows.iloc[0].to_dict() if len(rows) else {}

    wait_until(lambda: run().get("state") == "STARTED", 15, "the STARTED event in the history")
    time.sleep(1)  # a lease renewal or two: the worker is seen alive
    killed_at = time.time()
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(5)
    lost = wait_until(lambda: run().get("state") == "LOST" and run(), 10, "the run to show LOST")
    assert lost["worker"].startswith("doomed@")
    assert killed_at - 3 / 5 - 1 <= lost["lost_at"].timestamp() <= killed_at  # its last renewal

    stack.start_worker("rescuer", concurrency=1)
    assert res.get(timeout=20).startswith("rescuer@")
    done = wait_until(lambda: run().get("state") == "SUCCESS" and run(), 10, "the redelivered run's events")
    assert done["attempts"] == 2 and done["worker"].startswith("rescuer@") and done["lost_at"] is pd.NaT


def test_workers_survive_redis_restarts_and_every_acknowledged_task_runs(tmp_path, redis_port, repetitions):
    """Redis SIGKILLed and restarted (AOF, everysec) while 4 producers submit: workers reconnect alone."""
    port, data = free_port(), tmp_path / "redis"
    data.mkdir()
    argv = [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--databases", "256"]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data), "--logfile", str(data / "redis.log")]
    server = subprocess.Popen(argv)
    ping = redis.Redis(port=port)
    wait_until(lambda: pings(ping), 10, "redis-server")
    stack = Stack(port, tmp_path, "[broker]\nlease = 3\ntimeout = 1\n")
    notes = redis.Redis(port=redis_port)  # the tasks note their runs in the session's Redis, which stays up
    key = f"flow:{port}"
    stack.env["TESTS_NOTES_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    workers = [stack.start_worker(f"w{i}") for i in range(2)]
    acked: list[int] = []
    ids: dict[int, str] = {}
    refused: dict[str, int] = {}
    stop = threading.Event()

    def produce(offset: int) -> None:
        n = offset
        while not stop.is_set():
            try:
                ids[n] = taskkit.submit("tests.note", args=[key, n], app=stack.app).id
                acked.append(n)
            except Exception as exc:  # Redis is down: BrokerUnavailable, one line, nothing queued
                refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1
                time.sleep(0.1)
            n += 4
            time.sleep(0.005)

    producers = [threading.Thread(target=produce, args=(i,), daemon=True) for i in range(4)]
    try:
        for t in producers:
            t.start()
        for _ in range(repetitions(3, 20)):
            time.sleep(1.5)
            server.send_signal(signal.SIGKILL)
            server.wait()
            time.sleep(1)
            server = subprocess.Popen(argv)
            wait_until(lambda: pings(ping), 10, "redis-server back")
        time.sleep(1.5)
        stop.set()
        for t in producers:
            t.join(10)
        assert len(acked) > 100 and set(refused) == {"BrokerUnavailable"}, refused  # work flowed; submits met Redis down
        wanted = {str(n) for n in acked}

        def missing() -> set[str]:
            return wanted - {x.decode() for x in notes.lrange(key, 0, -1)}

        try:
            wait_until(lambda: not missing(), 60, "every acknowledged task to run")
        except AssertionError:
            left = sorted(missing())
            events = taskkit.events(app=stack.app)
            seen = {n: list(events[events["id"] == ids[int(n)]]["event"].astype(str)) for n in left[:5]}
            raise AssertionError(f"{len(left)} of {len(wanted)} acknowledged never ran; their events: {seen}") from None
        print(f"{len(acked)} acknowledged, all ran; {sum(refused.values())} submits refused while Redis was down")
        assert all(w.poll() is None for w in workers), [w.returncode for w in workers]
        assert stack.app.control.ping(timeout=2) and len(stack.app.control.ping(timeout=2)) == 2
    finally:
        stop.set()
        stack.stop()
        server.terminate()
        server.wait(10)


def test_no_task_is_lost_when_pool_children_and_whole_workers_are_killed(make_stack, redis_port, repetitions):
    stack = make_stack("[broker]\nlease = 3\n")
    notes, key = redis.Redis(port=redis_port), f"kills:{stack.db}"
    stack.env["TESTS_NOTES_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    workers = [stack.start_worker(f"k{i}") for i in range(2)]
    total, kills_wanted = repetitions((400, 4), (2000, 20))
    for i in range(total):
        taskkit.submit("tests.note_after", args=[key, i, 0.05], app=stack.app)
    rng = random.Random(10)
    kills = {"pool child": 0, "worker": 0}
    while sum(kills.values()) < kills_wanted:
        time.sleep(0.5)
        victim = rng.choice(workers)
        children = [pid for pid in _group_members(victim.pid) if pid != victim.pid]
        if children and sum(kills.values()) % 3 != 2:  # every third kill takes a whole worker
            os.kill(rng.choice(children), signal.SIGKILL)  # mid-task, most likely: the worker requeues it
            kills["pool child"] += 1
        else:
            os.killpg(victim.pid, signal.SIGKILL)  # the whole worker: its messages wait for their lease
            victim.wait(5)
            workers[workers.index(victim)] = stack.start_worker(f"k{sum(kills.values())}b")
            kills["worker"] += 1
    wanted = {str(i) for i in range(total)}
    wait_until(lambda: wanted <= {x.decode() for x in notes.lrange(key, 0, -1)}, 60, "every task to run")
    assert kills["pool child"] and kills["worker"], kills
    print(f"{total} tasks, {kills}: 0 lost, {notes.llen(key) - total} ran twice")
