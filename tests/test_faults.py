"""The fault suite: real processes killed and restarted while work flows, with counts.

Each loop runs a short version by default; `pytest --long-faults` runs the full one (the
counts the README quotes).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import threading
import time

import kombu
import pandas as pd
import pytest
import redis

import taskkit
from taskkit import leases
from taskkit.devstack import _group_members

from .conftest import Stack, free_port, pings, wait_until

FAST_BEAT = """
[beat]
max_interval = "0.2s"
lock_timeout = "1.5s"
"""


def lost_after_waiting(app, notes: redis.Redis, key: str, ids: dict[int, str], timeout: float) -> list[str]:
    """Wait until every submitted n is noted (or the timeout); return the ones that never ran.

    Each must be a message no worker ever received: kombu's Redis transport takes a message
    from its queue (BRPOP) and records it as unacknowledged in a second command, so a worker
    SIGKILLed, or a Redis killed, in between takes that one message with it. Anything that
    reached a worker is recorded, and leases give it back.
    """
    wanted = {str(n) for n in ids}

    def missing() -> set[str]:
        return wanted - {x.decode() for x in notes.lrange(key, 0, -1)}

    try:
        wait_until(lambda: not missing(), timeout, "every acknowledged task to run")
        return []
    except AssertionError:
        left = sorted(missing(), key=int)
    events = taskkit.events(app=app)
    seen = {n: list(events[events["id"] == ids[int(n)]]["event"].astype(str)) for n in left}
    assert all(e == ["sent"] for e in seen.values()), f"lost after a worker had them: {seen}"
    return left


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


def test_workers_survive_redis_restarts_and_acknowledged_tasks_run(tmp_path, redis_port, repetitions):
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
        restarts = repetitions(3, 20)
        for _ in range(restarts):
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
        lost = lost_after_waiting(stack.app, notes, key, {n: ids[n] for n in acked}, 60)
        print(f"{len(acked)} acknowledged, {len(lost)} lost in kombu's BRPOP window; {sum(refused.values())} refused while Redis was down")
        assert len(lost) <= restarts  # at most the one message in flight to a worker as Redis died, and rarely that
        assert all(w.poll() is None for w in workers), [w.returncode for w in workers]
        assert stack.app.control.ping(timeout=2) and len(stack.app.control.ping(timeout=2)) == 2
    finally:
        stop.set()
        stack.stop()
        server.terminate()
        server.wait(10)


def test_pool_child_and_worker_kills_lose_nothing_a_worker_received(make_stack, redis_port, repetitions):
    stack = make_stack("[broker]\nlease = 3\n")
    notes, key = redis.Redis(port=redis_port), f"kills:{stack.db}"
    stack.env["TESTS_NOTES_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    workers = [stack.start_worker(f"k{i}") for i in range(2)]
    total, kills_wanted = repetitions((400, 4), (2000, 20))
    ids = {i: taskkit.submit("tests.note_after", args=[key, i, 0.05], app=stack.app).id for i in range(total)}
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
    lost = lost_after_waiting(stack.app, notes, key, ids, 60)
    assert kills["pool child"] and kills["worker"], kills
    print(f"{total} tasks, {kills}: {len(lost)} lost in kombu's BRPOP window, {notes.llen(key) - total + len(lost)} ran twice")
    assert len(lost) <= kills["worker"]  # at most the message a killed worker had just taken; pool-child kills lose none


def test_a_message_taken_from_its_queue_but_not_recorded_as_unacked_goes_back(make_stack):
    """kombu's BRPOP succeeded, recording the message as unacked failed: taskkit keeps it and puts it back."""
    stack = make_stack()
    r, keys = stack.redis, stack.app.keys
    r.execute_command("ACL", "SETUSER", "noindex", "on", ">pw-noindex", "~*", "&*", "+@all", "-zadd")  # BRPOP yes, ZADD no
    try:
        sent = taskkit.submit("tests.add", args=[1, 2], app=stack.app)
        url = stack.url.replace("redis://", "redis://noindex:pw-noindex@")
        with kombu.Connection(url, transport_options=stack.app.conf.broker_transport_options) as conn:
            consumer = kombu.Consumer(conn.channel(), [stack.app.amqp.queues["default"]], callbacks=[lambda *_: None])
            consumer.consume()
            with pytest.raises(redis.exceptions.NoPermissionError):
                conn.drain_events(timeout=5)
        assert _sent(stack, "default") == 0 and r.hlen(keys.unacked()) == 0  # without taskkit: gone for good
        assert [m["headers"]["id"] for _, m, _, _ in leases.orphans] == [sent.id]
        with stack.app.connection_for_write() as conn:
            assert leases.give_back_orphans(conn.default_channel) == 1
        back = json.loads(r.lindex(keys.queue("default", 5), -1))  # the head: the next one taken
        assert back["headers"]["id"] == sent.id and back["headers"]["redelivered"] is True
        assert leases.orphans == []
    finally:
        r.execute_command("ACL", "DELUSER", "noindex")


def _delivered_unacked(stack):
    """One task message taken from its queue by a bare kombu consumer and not acknowledged."""
    sent = taskkit.submit("tests.add", args=[1, 2], app=stack.app)
    conn = kombu.Connection(stack.url, transport_options=stack.app.conf.broker_transport_options)
    got: list = []
    consumer = kombu.Consumer(conn.default_channel, [stack.app.amqp.queues["default"]], callbacks=[lambda _, m: got.append(m)])
    consumer.consume()
    conn.drain_events(timeout=5)
    return sent, conn, got


def test_closing_a_collected_connection_does_not_crash_the_worker(make_stack):
    """Celery collects a lost connection, then closes it again: kombu restored unacked messages
    through a transport without a client and raised AttributeError, killing the worker."""
    stack = make_stack()
    sent, conn, got = _delivered_unacked(stack)
    assert [m.headers["id"] for m in got] == [sent.id]  # delivered, not acknowledged
    conn._do_close_transport()  # what Connection.collect() leaves behind: the transport has no client
    conn.close()  # without taskkit's guard: AttributeError: 'NoneType' object has no attribute 'hostname'
    assert stack.redis.hlen(stack.app.keys.unacked()) == 1  # still recorded: its lease gives it back


def test_an_ack_after_its_channel_closed_is_a_connection_error_not_a_crash(make_stack):
    """A task that ends after the consumer closed its channel (a lost connection): kombu acked
    through no connection and raised AttributeError, killing the worker."""
    stack = make_stack()
    sent, conn, got = _delivered_unacked(stack)
    assert [m.headers["id"] for m in got] == [sent.id]
    conn._do_close_transport()
    conn.close()  # the channel is closed now; its message is still held by the "task"
    with pytest.raises(redis.ConnectionError):
        got[0].ack()  # without taskkit's guard: AttributeError: 'NoneType' object has no attribute 'client'
    got[0].ack_log_error(logging.getLogger("test"), conn.connection_errors)  # how Celery acks: logged, not raised
