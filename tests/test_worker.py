"""Real worker processes: round trip, priorities, retries, progress, at-least-once delivery."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time

import pytest
from celery import Celery

import taskkit
from taskkit import PROGRESS, leases

from .conftest import free_port, wait_until


def test_round_trip(shared_stack):
    res = taskkit.submit("tests.add", args=[2, 3], app=shared_stack.app)
    assert res.get(timeout=10) == 5
    info = taskkit.result(res.id, app=shared_stack.app)
    assert info["state"] == "SUCCESS" and info["result"] == 5 and info["task"] == "tests.add"
    assert info["worker"].startswith("shared@")


def test_waiting_priority_0_runs_before_lower_priorities(make_stack):
    stack = make_stack()
    for priority in (9, 5, 0, 7, 3):
        taskkit.submit("tests.record", args=["order", priority], queue="default", priority=priority, app=stack.app)
    stack.start_worker("prio", queues="default", concurrency=1)
    order = wait_until(lambda: stack.redis.llen("order") == 5 and stack.redis.lrange("order", 0, -1), 20, "all five tasks")
    assert [int(x) for x in order] == [0, 3, 5, 7, 9]


def test_retries_back_off_with_growing_delays_then_succeed(shared_stack):
    res = taskkit.submit("tests.flaky", args=["flaky-ok", 3], app=shared_stack.app)
    assert res.get(timeout=20) == 4  # 3 failures, 3 retries, success on attempt 4
    times = [float(x) for x in shared_stack.redis.lrange("flaky-ok", 0, -1)]
    delays = [b - a for a, b in itertools.pairwise(times)]
    # backoff 0.25s doubling, no jitter: about 0.25, 0.5, 1.0 (plus scheduling latency)
    assert all(later > earlier for earlier, later in itertools.pairwise(delays)), delays
    assert delays[0] >= 0.25 and delays[2] >= 1.0


def test_retries_stop_at_max_and_the_final_failure_hook_runs_once(shared_stack):
    res = taskkit.submit("tests.flaky", args=["flaky-never", 99], app=shared_stack.app)
    with pytest.raises(ValueError):
        res.get(timeout=20)
    assert shared_stack.redis.llen("flaky-never") == 4  # 1 try + max_retries 3
    wait_until(lambda: shared_stack.redis.llen(f"final:{res.id}"), 5, "final-failure hook")
    time.sleep(0.3)
    assert shared_stack.redis.lrange(f"final:{res.id}", 0, -1) == [b"ValueError"]


def test_retry_policy_comes_from_config_and_skips_other_errors(shared_stack):
    retried = taskkit.submit("tests.fails_with", args=["conn", "ConnectionError"], app=shared_stack.app)
    not_retried = taskkit.submit("tests.fails_with", args=["key", "KeyError"], app=shared_stack.app)
    with pytest.raises(ConnectionError):
        retried.get(timeout=20)
    with pytest.raises(KeyError):
        not_retried.get(timeout=20)
    assert shared_stack.redis.llen("conn") == 4  # [retry] max_retries 3 on ConnectionError
    assert shared_stack.redis.llen("key") == 1


def test_progress_is_readable_from_the_result(shared_stack):
    res = taskkit.submit("tests.progressing", args=[10, 0.3], app=shared_stack.app)
    info = wait_until(lambda: (i := taskkit.result(res.id, app=shared_stack.app))["state"] == PROGRESS and i, 10, "progress")
    assert info["progress"]["total"] == 10 and 1 <= info["progress"]["done"] <= 10
    assert info["progress"]["stage"] == "counting"
    assert res.get(timeout=10) == 10


def test_wait_follows_progress_and_returns_the_result(shared_stack):
    res = taskkit.submit("tests.progressing", args=[5, 0.3], app=shared_stack.app)
    seen = []
    info = taskkit.wait(res.id, timeout=15, on_progress=seen.append, app=shared_stack.app)
    assert info["state"] == "SUCCESS" and info["result"] == 5 and seen[-1] == info
    assert any(s["state"] == PROGRESS for s in seen)
    done = [s["progress"]["done"] for s in seen if s["state"] == PROGRESS]
    assert done == sorted(done) and len(done) == len(set(done))  # one call per change


def test_wait_times_out_with_one_clear_line(shared_stack):
    res = taskkit.submit("tests.sleeps", args=[2], app=shared_stack.app)
    start = time.monotonic()
    with pytest.raises(taskkit.WaitTimeout, match=f"task {res.id} did not finish within 0.5s"):
        taskkit.wait(res.id, timeout=0.5, app=shared_stack.app)
    assert time.monotonic() - start < 1.5
    with pytest.raises(taskkit.InvalidOption, match="timeout=0"):
        taskkit.wait(res.id, timeout=0, app=shared_stack.app)
    assert taskkit.wait(res.id, timeout="10s", app=shared_stack.app)["state"] == "SUCCESS"  # a duration works too


def test_worker_log_lines_carry_task_name_and_id(shared_stack):
    res = taskkit.submit("tests.says", args=["hello"], app=shared_stack.app)
    res.get(timeout=10)
    log = (shared_stack.dir / "shared.log").read_text()
    line = next(line for line in log.splitlines() if "task says hello" in line)
    assert f"tests.says[{res.id}]" in line


def test_json_log_format(make_stack):
    stack = make_stack('[log]\nformat = "json"\n')
    stack.start_worker("jsonlog", concurrency=1)
    res = taskkit.submit("tests.says", args=["json"], app=stack.app)
    res.get(timeout=10)
    records = [json.loads(line) for line in (stack.dir / "jsonlog.log").read_text().splitlines() if line.startswith("{")]
    mine = next(r for r in records if r["message"] == "task says json")
    assert mine["task_id"] == res.id and mine["task_name"] == "tests.says" and mine["level"] == "WARNING"


def test_pool_child_killed_mid_task_is_requeued_and_runs_again(make_stack):
    stack = make_stack('[broker]\nvisibility_timeout = "2h"\n')
    stack.start_worker("killchild", concurrency=2)
    res = taskkit.submit("tests.slow_once", args=["child", 60], app=stack.app)
    first = wait_until(lambda: stack.redis.lindex("child", 0), 10, "first attempt").decode()
    child_pid = int(first.split()[1])
    killed_at = time.monotonic()
    os.kill(child_pid, signal.SIGKILL)
    assert res.get(timeout=20).startswith("killchild@")
    # requeued (at the tail of an idle queue): long before the 2-hour visibility timeout could have done it
    assert time.monotonic() - killed_at < 15
    assert stack.redis.llen("child") == 2


def test_whole_worker_killed_task_is_redelivered_within_the_lease(make_stack):
    stack = make_stack()  # broker.lease = 10 s; visibility_timeout = 1 h, which alone would hold it that long
    lease = stack.settings.broker.lease
    doomed = stack.start_worker("doomed", concurrency=1)
    res = taskkit.submit("tests.slow_once", args=["whole", 120], app=stack.app)
    assert wait_until(lambda: stack.redis.lindex("whole", 0), 10, "first attempt").startswith(b"doomed@")
    stack.start_worker("rescuer", concurrency=1)
    time.sleep(lease / 2)  # it renewed its lease a few times: a live holder keeps its message
    assert stack.redis.llen("whole") == 1
    killed_at = time.time()
    os.killpg(doomed.pid, signal.SIGKILL)  # main process and its pool: nothing acks or rejects
    doomed.wait(5)
    assert res.get(timeout=lease * 3).startswith("rescuer@")
    second_at = stack.redis.lindex("whole", 1).decode().split()[2]
    took = float(second_at) - killed_at
    print(f"redelivered {took:.1f}s after the SIGKILL (lease {lease:g}s)")
    assert lease * (1 - 1 / leases.RENEWALS_PER_LEASE) - 0.5 <= took <= lease * (1 + 2 / leases.RENEWALS_PER_LEASE) + 2


def test_a_live_worker_keeps_its_messages_however_long_they_run(make_stack):
    stack = make_stack("[broker]\nlease = 2\n")  # the shortest lease: a long task outlives it many times
    stack.start_worker("holder", concurrency=1)
    res = taskkit.submit("tests.slow_once", args=["held", 9], app=stack.app)
    wait_until(lambda: stack.redis.llen("held"), 10, "the holder to start it")
    stack.start_worker("idle", concurrency=1)  # reaps every 0.4 s meanwhile
    queued = taskkit.submit("tests.record", args=["held-queued", 1], app=stack.app)  # waits behind nothing: idle runs it
    queued.get(timeout=10)
    assert res.get(timeout=20).startswith("holder@")
    assert stack.redis.llen("held") == 1  # never handed to the idle worker


def test_pool_processes_are_recycled_after_their_limits_with_no_task_lost(make_stack):
    stack = make_stack('[limits]\nmax_tasks_per_child = 3\nmax_memory_per_child = "150MB"\n')
    assert stack.app.conf.worker_max_tasks_per_child == 3 and stack.app.conf.worker_max_memory_per_child == 150 * 10**6 // 1024
    stack.start_worker("recycled", concurrency=1)
    pids = [taskkit.submit("tests.pid", app=stack.app).get(timeout=20) for _ in range(9)]
    assert len(set(pids)) == 3 and all(pids.count(p) == 3 for p in set(pids))  # a new process every 3 tasks, all 9 ran
    leaky = taskkit.submit("tests.pid", args=[200], app=stack.app).get(timeout=20)  # leaves 200 MB resident
    after = taskkit.submit("tests.pid", app=stack.app).get(timeout=20)
    assert after != leaky  # replaced after the task that crossed max_memory_per_child


def test_running_tasks_show_started_and_run_even_when_storing_it_fails(make_stack):
    stack = make_stack()
    stack.start_worker("tracked", concurrency=1)
    res = taskkit.submit("tests.blocker", args=["tracked"], app=stack.app)
    wait_until(lambda: stack.redis.llen("tracked:started"), 10, "the task to start")
    assert taskkit.result(res.id, app=stack.app)["state"] == "STARTED"
    stack.redis.rpush("tracked:go", 1)
    assert res.get(timeout=10).startswith("tracked@")

    # Celery would store STARTED before running the task, and a failed store ends the run unrun
    blind = make_stack(f'[broker]\nresult_url = "redis://127.0.0.1:{free_port()}/0"\n')  # nobody listens there
    blind.start_worker("blind", concurrency=1)
    plain = Celery(broker=blind.url)  # taskkit's submit would refuse: it subscribes to the result store first
    plain.send_task("tests.record", args=["blind-ran", 1], queue="default")
    plain.close()
    wait_until(lambda: blind.redis.llen("blind-ran"), 15, "the task to run although its result store is down")


def test_started_is_never_stored_over_a_success(shared_stack):
    """The STARTED write (one script call the task does not wait for) keeps Celery's guard."""
    from taskkit.task import _STARTED

    backend, key = shared_stack.app.backend, shared_stack.app.backend.get_key_for_task("done-already")
    done = backend.encode({"status": "SUCCESS", "result": 1, "task_id": "done-already"})
    shared_stack.redis.set(key, done)
    started = backend.encode({"status": "STARTED", "result": None, "task_id": "done-already"})
    assert shared_stack.redis.eval(_STARTED, 1, key, started, 60) == 0 and shared_stack.redis.get(key) == done.encode()
    shared_stack.redis.delete(key)
    assert shared_stack.redis.eval(_STARTED, 1, key, started, 60) == 1 and 0 < shared_stack.redis.ttl(key) <= 60


def test_task_events_reach_a_monitor(shared_stack):
    """Flower's view: task-received, -started and -succeeded for every run (taskkit's consumer sends them batched)."""
    seen: dict[str, set[str]] = {}
    app = shared_stack.app
    with app.connection_for_read() as conn:
        recv = app.events.Receiver(conn, handlers={"*": lambda e: seen.setdefault(e.get("uuid", ""), set()).add(e["type"])})
        consume = recv.itercapture(limit=None, timeout=0.2, wakeup=False)
        next(consume)  # bound: events from here on reach us
        ids = [taskkit.submit("tests.add", args=[i, i], app=app).id for i in range(20)]
        deadline = time.monotonic() + 15
        wanted = {"task-received", "task-started", "task-succeeded"}
        while time.monotonic() < deadline and not all(wanted <= seen.get(i, set()) for i in ids):
            try:
                next(consume)
            except TimeoutError:
                pass
    assert all(wanted <= seen.get(i, set()) for i in ids), {i: seen.get(i) for i in ids}


def test_the_started_write_gives_its_connection_back_whatever_the_run_does(make_stack):
    """STARTED's reply is read (and its connection released) when a run succeeds, fails, retries or reports progress."""
    stack = make_stack()
    stack.start_worker("conns", concurrency=1)
    baseline = taskkit.submit("tests.connections_in_use", app=stack.app).get(timeout=20)
    assert baseline >= 1  # its own STARTED write, not yet read back
    for _ in range(5):
        taskkit.submit("tests.add", args=[1, 2], app=stack.app).get(timeout=20)
        with pytest.raises(KeyError):
            taskkit.submit("tests.fails_with", args=["conns-fail", "KeyError"], app=stack.app).get(timeout=20)
        assert taskkit.submit("tests.flaky", args=[f"conns-{time.monotonic()}", 1], app=stack.app).get(timeout=20) >= 1
        taskkit.submit("tests.progressing", args=[3, 0.01], app=stack.app).get(timeout=20)
    assert taskkit.submit("tests.connections_in_use", app=stack.app).get(timeout=20) == baseline
