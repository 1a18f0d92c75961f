"""Queues and workers against a real Redis and two real workers: depth, peek, purge,
pause/resume, revoke, rate limits, pool size, and calls to workers that do not answer.

The two workers are shared by the module; each test uses its own queue or task keys and
puts back what it paused, so the order of the tests does not matter.
"""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import UTC, datetime

import pytest
import redis
from celery import Celery
from click.testing import CliRunner

import taskkit
from taskkit.cli import main
from taskkit.config import load_settings

from .conftest import Stack, free_port, wait_until

HOST = socket.gethostname()
W1, W2 = f"w1@{HOST}", f"w2@{HOST}"
BOTH = [W1, W2]
WORKER_QUEUES = "critical,high,default,low,held"
FAST = 0.5  # seconds: timeout for calls addressed to every worker (they wait all of it)

# Queues no worker consumes at start, one per test that needs waiting messages.
CONFIG = """
[queues.held]
[queues.parked]
[queues.peeked]
[queues.purged]
[queues.spare]
"""


@pytest.fixture(scope="module")
def stack(redis_port, tmp_path_factory):
    s = Stack(redis_port, tmp_path_factory.mktemp("control"), CONFIG)
    for name in ("w1", "w2"):
        s.start_worker(name, queues=WORKER_QUEUES, wait=False)  # start both, then wait once
    try:
        wait_until(lambda: len(taskkit.inspect("ping", destination=BOTH, timeout=0.3, app=s.app)["replies"]) == 2, 30, "two workers")
    except AssertionError:
        s.stop()
        raise
    yield s
    s.stop()


def consumed(stack: Stack) -> dict[str, set[str]]:
    replies = taskkit.inspect("active_queues", destination=BOTH, app=stack.app)["replies"]
    return {w: {q["name"] for q in qs} for w, qs in replies.items()}


def by_name(infos):
    return {q.name: q for q in infos}


def submit(stack, name, *args, **options):
    return taskkit.submit(name, args=list(args), app=stack.app, **options)


# ---------------------------------------------------------------- queues


def test_queue_info_counts_levels_unacked_scheduled_and_consumers(stack, monkeypatch):
    for priority, n in {0: 3, 4: 2, 9: 1}.items():
        for _ in range(n):
            submit(stack, "tests.add", 1, 2, queue="parked", priority=priority)
    submit(stack, "tests.add", 1, 2, queue="parked", countdown=300)  # waiting, with an ETA, default priority 5
    running = submit(stack, "tests.blocker", "depth", queue="held")
    later = submit(stack, "tests.add", 1, 2, queue="held", countdown=300)  # a worker holds it until its ETA
    try:
        wait_until(lambda: stack.redis.llen("depth:started"), 10, "the blocker to start")
        wait_until(lambda: by_name(taskkit.queue_info(consumers=False, app=stack.app))["held"].unacked == 2, 10, "two held messages")
        info = by_name(taskkit.queue_info(timeout=FAST, app=stack.app))

        assert (info["parked"].waiting, info["parked"].levels) == (7, {0: 3, 4: 2, 5: 1, 9: 1})
        assert (info["parked"].unacked, info["parked"].scheduled, info["parked"].consumers) == (0, 0, ())
        assert (info["held"].waiting, info["held"].unacked, info["held"].scheduled) == (0, 2, 1)
        assert info["held"].consumers == (W1, W2) and info["default"].consumers == (W1, W2)
        rows = taskkit.workers(destination=BOTH, app=stack.app)["replies"].values()  # the taskkit_status broadcast
        assert sum(r["scheduled"] for r in rows) == 1 and sum(r["active"] for r in rows) == 1  # the ETA task; the blocker
        assert info["default"].waiting == info["default"].unacked == 0
        assert set(info) == set(stack.settings.queues)
        assert taskkit.queue_depths(app=stack.app)["parked"] == 7

        # all queues' counts in one round trip: one write of the whole pipeline to the socket
        sent = []
        original = redis.connection.AbstractConnection.send_packed_command

        def counting(conn, *args, **kwargs):
            sent.append(1)
            return original(conn, *args, **kwargs)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
        taskkit.queue_info(consumers=False, undeclared=False, app=stack.app)
        assert len(sent) == 1
    finally:
        stack.redis.rpush("depth:go", 1)
        taskkit.revoke([later.id], destination=BOTH, app=stack.app)
    assert running.get(timeout=10).startswith(("w1@", "w2@"))


def test_peek_shows_the_order_workers_take_without_consuming(stack):
    sent = [(5, "a"), (0, "b"), (9, "c"), (0, "d"), (5, "e")]
    ids = {tag: submit(stack, "tests.record", "peek-order", tag, queue="peeked", priority=p).id for p, tag in sent}
    ids["f"] = submit(stack, "tests.record", "peek-order", "f", queue="peeked", priority=0, countdown=30).id
    levels = stack.app.keys.queue_levels("peeked")
    before = [stack.redis.lrange(k, 0, -1) for k in levels]

    msgs = taskkit.peek("peeked", count=10, app=stack.app)

    assert [m.args[1] for m in msgs] == ["b", "d", "f", "a", "e", "c"]  # priority 0 first, oldest first
    assert [m.priority for m in msgs] == [0, 0, 0, 5, 5, 9]
    assert [m.id for m in msgs] == [ids[m.args[1]] for m in msgs]
    assert {m.task for m in msgs} == {"tests.record"} and msgs[0].kwargs == {} and msgs[0].args == ["peek-order", "b"]
    assert msgs[0].eta is None and 25 < (datetime.fromisoformat(msgs[2].eta) - datetime.now(UTC)).total_seconds() <= 30
    assert [m.id for m in taskkit.peek("peeked", count=2, app=stack.app)] == [ids["b"], ids["d"]]
    assert [stack.redis.lrange(k, 0, -1) for k in levels] == before  # nothing consumed

    # a worker takes them in exactly that order (its log lists messages as it receives them)
    log = stack.dir / "w1.log"
    assert taskkit.resume("peeked", destination=[W1], app=stack.app)["replies"]
    try:
        pattern = re.compile(r"Task tests\.record\[([0-9a-f-]+)\] received")

        def received():
            got = [i for i in pattern.findall(log.read_text()) if i in ids.values()]
            return len(got) == 6 and got

        assert wait_until(received, 10, "the worker to receive all six") == [m.id for m in msgs]
    finally:
        taskkit.pause("peeked", destination=[W1], app=stack.app)
    taskkit.revoke([ids["f"]], destination=BOTH, app=stack.app)


def test_purge_returns_the_count_and_empties_every_priority_level(stack):
    for priority in (0, 0, 0, 3, 3, 9):
        submit(stack, "tests.add", 1, 2, queue="purged", priority=priority)
    assert taskkit.queue_depths(app=stack.app)["purged"] == 6

    assert taskkit.purge_queue("purged", app=stack.app) == 6

    assert stack.redis.exists(*stack.app.keys.queue_levels("purged")) == 0
    assert taskkit.queue_depths(app=stack.app)["purged"] == 0
    assert taskkit.purge_queue("purged", app=stack.app) == 0
    with pytest.raises(taskkit.UnknownQueue, match="did you mean purged"):
        taskkit.purge_queue("purge", app=stack.app)


def test_depth_peek_and_purge_follow_kombus_global_key_prefix(make_stack):
    stack = make_stack('[celery.broker_transport_options]\nglobal_keyprefix = "tk:"\n')
    for priority in (9, 0, 5):
        submit(stack, "tests.add", priority, 0, queue="default", priority=priority)
    assert stack.redis.llen("tk:default") == 1 and stack.redis.llen("default") == 0  # kombu wrote prefixed keys

    assert taskkit.queue_depths(app=stack.app)["default"] == 3
    assert by_name(taskkit.queue_info(consumers=False, app=stack.app))["default"].levels == {0: 1, 5: 1, 9: 1}
    assert [m.priority for m in taskkit.peek("default", app=stack.app)] == [0, 5, 9]
    assert taskkit.purge_queue("default", app=stack.app) == 3
    assert stack.redis.exists(*stack.app.keys.queue_levels("default")) == 0


# ---------------------------------------------------------------- workers


def test_pause_and_resume_a_queue_on_one_worker_and_on_all(stack):
    try:
        assert taskkit.pause("low", destination=[W1], app=stack.app)["replies"].keys() == {W1}
        wait_until(lambda: (c := consumed(stack)) and "low" not in c[W1] and "low" in c[W2], 5, "w1 to stop consuming low")
        assert by_name(taskkit.queue_info(timeout=FAST, app=stack.app))["low"].consumers == (W2,)
        for _ in range(4):
            submit(stack, "tests.whoami", "paused-one", queue="low")
        ran = wait_until(lambda: stack.redis.llen("paused-one") == 4 and stack.redis.lrange("paused-one", 0, -1), 10, "4 tasks")
        assert {r.split()[0].decode() for r in ran} == {W2}

        out = taskkit.pause("low", timeout=FAST, app=stack.app)  # every worker
        assert out["replies"].keys() == set(BOTH) and out["missing"] == []
        wait_until(lambda: all("low" not in q for q in consumed(stack).values()), 5, "nobody consuming low")
        time.sleep(1.2)  # a BRPOP already waiting when the consumer was cancelled hands its message back
        submit(stack, "tests.whoami", "paused-all", queue="low")
        time.sleep(1.5)
        assert stack.redis.llen("paused-all") == 0 and taskkit.queue_depths(app=stack.app)["low"] == 1

        taskkit.resume("low", destination=[W1], app=stack.app)
        ran = wait_until(lambda: stack.redis.lrange("paused-all", 0, -1), 10, "the task to run after resume")
        assert ran[0].split()[0].decode() == W1
    finally:
        out = taskkit.resume("low", timeout=FAST, app=stack.app)
    assert out["replies"].keys() == set(BOTH)
    wait_until(lambda: all("low" in q for q in consumed(stack).values()), 5, "both consuming low again")


def test_revoke_by_id_and_by_name_means_a_waiting_task_never_runs(stack):
    by_id = submit(stack, "tests.record", "revoked", "by-id", queue="spare")
    named = [submit(stack, "tests.whoami", "revoked-by-name", queue="spare") for _ in range(2)]
    kept = submit(stack, "tests.record", "revoked", "kept", queue="spare")

    out = taskkit.revoke(by_id.id, destination=BOTH, app=stack.app)
    assert out["ids"] == [by_id.id] and out["replies"].keys() == set(BOTH) and not out["missing"]
    out = taskkit.revoke(task_name="tests.whoami", destination=BOTH, app=stack.app)
    assert sorted(out["ids"]) == sorted(r.id for r in named)

    taskkit.resume("spare", destination=BOTH, app=stack.app)  # now the workers receive all four, in order
    try:
        wait_until(lambda: stack.redis.lrange("revoked", 0, -1) == [b"kept"], 10, "the kept task")
        wait_until(lambda: by_name(taskkit.queue_info(consumers=False, app=stack.app))["spare"].unacked == 0, 10, "spare to drain")
    finally:
        taskkit.pause("spare", destination=BOTH, app=stack.app)
    assert stack.redis.lrange("revoked", 0, -1) == [b"kept"] and stack.redis.llen("revoked-by-name") == 0
    assert {r.state for r in (by_id, *named)} == {"REVOKED"} and kept.state == "SUCCESS"


def test_revoke_with_terminate_stops_a_running_task(stack):
    res = submit(stack, "tests.blocker", "term", queue="default")
    started = wait_until(lambda: stack.redis.lrange("term:started", 0, -1), 10, "the blocker to start")
    worker = started[0].split()[0].decode()

    out = taskkit.revoke(task_name="tests.blocker", terminate=True, destination=BOTH, app=stack.app)

    assert out["ids"] == [res.id]
    assert out["replies"][worker] == {"ok": f"terminate: {res.id}"}
    wait_until(lambda: res.state == "REVOKED", 10, "the task to be revoked")
    stack.redis.rpush("term:go", 1)  # would let it finish, were it still running
    time.sleep(1.5)
    assert stack.redis.llen("term:done") == 0 and stack.redis.llen("term:started") == 1  # stopped, not run again
    stack.redis.delete("term:go")


def _span(stack: Stack, key: str, n: int) -> float:
    for _ in range(n):
        submit(stack, "tests.whoami", key, queue="default")
    stamps = wait_until(lambda: stack.redis.llen(key) == n and stack.redis.lrange(key, 0, -1), 20, f"{n} tasks")
    times = sorted(float(s.split()[1]) for s in stamps)
    return times[-1] - times[0]


def test_rate_limit_takes_effect_and_can_be_removed(stack):
    out = taskkit.rate_limit("tests.whoami", "2/s", destination=BOTH, app=stack.app)
    try:
        assert out["replies"].keys() == set(BOTH) and not out["errors"]
        registered = taskkit.inspect("registered", destination=BOTH, app=stack.app)["replies"]
        assert all("tests.whoami [rate_limit=2/s]" in tasks for tasks in registered.values())
        # 6 tasks over 2 workers at 2/s each: at least 2 intervals of 0.5 s on one worker
        assert _span(stack, "limited", 6) >= 0.9
    finally:
        out = taskkit.rate_limit("tests.whoami", None, destination=BOTH, app=stack.app)
    assert out["replies"].keys() == set(BOTH)
    assert all("tests.whoami" in tasks for tasks in taskkit.inspect("registered", destination=BOTH, app=stack.app)["replies"].values())
    assert _span(stack, "unlimited", 6) < 0.5


def test_pool_grow_and_shrink_show_in_stats(stack):
    def row():
        return taskkit.workers(destination=[W2], app=stack.app)["replies"][W2]

    # shrink only removes idle processes: wait out tasks earlier tests left with W2 (rate-limited ones)
    wait_until(lambda: (r := row())["active"] == 0 and r["reserved"] == 0, 30, "W2 to be idle")
    before = row()
    out = taskkit.pool_grow(2, destination=[W2], app=stack.app)
    assert out["replies"] == {W2: {"ok": "pool will grow"}}
    assert row()["prefetch_count"] == before["prefetch_count"] + 2
    wait_until(lambda: row()["pool"] == before["pool"] + 2, 15, "two more pool processes")

    out = taskkit.pool_shrink(2, destination=[W2], app=stack.app)
    assert out["replies"] == {W2: {"ok": "pool will shrink"}}
    wait_until(lambda: row()["pool"] == before["pool"], 15, "the pool back to its size")
    assert row()["prefetch_count"] == before["prefetch_count"]

    out = taskkit.autoscale(4, 1, destination=[W2], app=stack.app)  # this worker was not started with --autoscale
    assert "Autoscale not enabled" in out["errors"][W2]


def test_redis_info_on_its_own(stack):
    info = taskkit.redis_info(app=stack.app)
    assert 0 < info["latency_ms"] < 100
    assert info["version"] == stack.redis.info()["redis_version"] and info["role"] == "master"
    assert info["used_memory_bytes"] > 0 and info["connected_clients"] >= 1 and info["evicted_keys"] == 0
    assert {"maxmemory_bytes", "maxmemory_policy", "aof_enabled", "uptime_s"} <= info.keys()


def test_workers_lists_both_with_their_queues(stack):
    out = taskkit.workers(timeout=FAST, app=stack.app)
    assert out["replies"].keys() == set(BOTH) and out["missing"] == []
    for row in out["replies"].values():
        assert row["queues"] == sorted(WORKER_QUEUES.split(",")) and row["pool"] >= 1 and row["active"] == 0
    assert taskkit.ping(timeout=FAST, app=stack.app) == {W1: True, W2: True}


def test_a_worker_that_does_not_exist_is_reported_missing_within_the_timeout(stack):
    start = time.monotonic()
    out = taskkit.inspect("stats", destination=[W1, "ghost@nowhere"], timeout=0.5, app=stack.app)
    elapsed = time.monotonic() - start
    assert out["replies"].keys() == {W1} and out["missing"] == ["ghost@nowhere"]
    assert elapsed < 1.5  # the timeout plus one reply poll and a connection, not a hang

    out = taskkit.pause("spare", destination="ghost@nowhere", timeout=0.3, app=stack.app)
    assert out == {"replies": {}, "missing": ["ghost@nowhere"], "errors": {}}
    out = taskkit.workers(destination=["ghost@nowhere"], timeout=0.3, app=stack.app)
    assert out["replies"] == {} and out["missing"] == ["ghost@nowhere"]


def test_an_unreachable_redis_is_a_clear_error_not_a_hang():
    settings = load_settings(env={"TASKKIT_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0", "TASKKIT_BROKER_TIMEOUT": "1"})
    app = taskkit.create_app(settings)
    calls = [
        lambda: taskkit.queue_info(app=app),
        lambda: taskkit.peek("default", app=app),
        lambda: taskkit.purge_queue("default", app=app),
        lambda: taskkit.workers(app=app),
        lambda: taskkit.pause("low", destination="w1@nowhere", app=app),
        lambda: taskkit.redis_info(app=app),
        lambda: taskkit.result("some-id", app=app),
    ]
    for call in calls:
        start = time.monotonic()
        with pytest.raises(taskkit.BrokerUnavailable, match="cannot reach Redis"):
            call()
        assert time.monotonic() - start < 1.5


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        (lambda app: taskkit.peek("nope", app=app), taskkit.UnknownQueue, "unknown queue 'nope'"),
        (lambda app: taskkit.pause("nope", app=app), taskkit.UnknownQueue, "unknown queue 'nope'"),
        (lambda app: taskkit.peek("default", count=-1, app=app), taskkit.InvalidOption, "count=-1"),
        (lambda app: taskkit.rate_limit("tests.whoami", "fast", app=app), taskkit.InvalidOption, "rate_limit='fast'"),
        (lambda app: taskkit.rate_limit("tests.whoam", "1/s", app=app), taskkit.UnknownTask, "did you mean tests.whoami"),
        (lambda app: taskkit.revoke(app=app), taskkit.InvalidOption, "give task ids or a task name"),
        (lambda app: taskkit.revoke("x", signal="NOPE", app=app), taskkit.InvalidOption, "signal='NOPE'"),
        (lambda app: taskkit.pool_grow(0, app=app), taskkit.InvalidOption, "n=0"),
        (lambda app: taskkit.autoscale(2, 3, app=app), taskkit.InvalidOption, "minimum=3"),
        (lambda app: taskkit.inspect("everything", app=app), taskkit.InvalidOption, "one of ping, stats"),
        (lambda app: taskkit.inspect("stats", timeout=0, app=app), taskkit.InvalidOption, "timeout=0"),
    ],
)
def test_bad_requests_fail_before_anything_is_sent(stack, call, error, text):
    with pytest.raises(error, match=re.escape(text)) as info:
        call(stack.app)
    assert isinstance(info.value, taskkit.TaskkitError)


# ---------------------------------------------------------------- CLI


@pytest.fixture
def cli(stack, monkeypatch):
    monkeypatch.setenv("TASKKIT_BROKER_URL", stack.url)

    def run(*args: str, input: str | None = None):
        return CliRunner().invoke(main, ["--config", str(stack.config_path), *args], input=input)

    return run


def test_cli_queues_peek_purge(cli, stack):
    for priority in (7, 1):
        submit(stack, "tests.add", priority, 0, queue="purged", priority=priority)
    out = cli("queues", "--json", "--timeout", str(FAST))
    rows = {r["name"]: r for r in json.loads(out.output)}
    assert rows["purged"]["waiting"] == 2 and rows["purged"]["levels"] == {"1": 1, "7": 1} and rows["low"]["consumers"] == BOTH
    out = cli("queues", "--no-consumers")
    assert out.exit_code == 0 and re.search(r"^purged\s+5\s+2\s+p1:1 p7:1\s+0\s+0\s+\?$", out.output, re.M), out.output

    out = cli("peek", "purged", "-n", "1")
    assert out.exit_code == 0 and "tests.add" in out.output and "[1, 0]" in out.output and "[7, 0]" not in out.output

    out = cli("purge", "purged", input="n\n")
    assert out.exit_code == 1 and "Delete 2 waiting message(s) from 'purged'?" in out.output and "Aborted" in out.output
    assert taskkit.queue_depths(app=stack.app)["purged"] == 2
    out = cli("purge", "purged", input="y\n")
    assert out.exit_code == 0 and "purged 2 message(s) from purged" in out.output
    out = cli("purge", "purged", "--yes", "--json")
    assert json.loads(out.output) == {"queue": "purged", "purged": 0}


def test_cli_workers_pause_resume_and_missing_workers(cli):
    out = cli("workers", "-d", f"{W1},{W2}")
    assert out.exit_code == 0 and out.output.startswith("worker") and W1 in out.output and W2 in out.output

    out = cli("pause", "spare", "-d", W1, "--json")
    assert out.exit_code == 0 and json.loads(out.output)["replies"] == {W1: {"ok": "no longer consuming from spare"}}
    out = cli("workers", "--queues", "-d", W1)
    assert out.exit_code == 0 and "spare" not in out.output

    out = cli("resume", "default", "-d", W2, "-d", "ghost@nowhere", "--timeout", "0.3")
    assert out.exit_code == 1 and W2 in out.output
    assert out.output.strip().splitlines()[-1] == "Error: no reply from ghost@nowhere within 0.3s"


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["peek", "nope"], 1, "unknown queue 'nope'"),
        (["purge", "nope", "--yes"], 1, "unknown queue 'nope'"),
        (["rate-limit", "tests.whoami", "1/x"], 1, "expected a rate"),
        (["rate-limit", "tests.nope", "1/s"], 1, "unknown task 'tests.nope'"),
        (["revoke"], 1, "give task ids or a task name"),
        (["pool", "grow", "0"], 1, "n=0: expected a whole number ≥ 1"),
        (["pool", "autoscale", "2", "3"], 1, "minimum=3: expected a whole number from 0 to maximum (2)"),
        (["workers", "-d", "ghost@nowhere", "--timeout", "0.2"], 1, "no reply from ghost@nowhere within 0.2s"),
        (["pool", "autoscale", "3", "-d", W1], 1, "Autoscale not enabled"),
    ],
)
def test_cli_errors_are_one_line(cli, args, code, text):
    out = cli(*args)
    assert out.exit_code == code, out.output
    assert text in out.output and "Traceback" not in out.output


def test_undeclared_queues_are_listed_and_reachable_only_on_purpose(stack, cli):
    plain = Celery(broker=stack.url)  # a plain client with a typo: Celery creates the queue, no taskkit worker reads it
    for priority in (0, 9, 9):  # (a plain client rounds priorities to its steps 0, 3, 6, 9)
        plain.send_task("tests.whoami", ["orphan"], queue="reprots", priority=priority)
    rows = {q.name: q for q in taskkit.queue_info(consumers=False, app=stack.app)}
    orphan = rows["reprots"]
    assert (orphan.declared, orphan.waiting, orphan.levels, orphan.priority) == (False, 3, {0: 1, 9: 2}, None)
    assert all(q.declared for name, q in rows.items() if name != "reprots")
    with pytest.raises(taskkit.UnknownQueue, match="unknown queue 'reprots'"):
        taskkit.peek("reprots", app=stack.app)  # only on purpose
    assert [m.task for m in taskkit.peek("reprots", undeclared=True, app=stack.app)] == ["tests.whoami"] * 3
    table = cli("queues", "--no-consumers")
    assert "reprots (undeclared)" in table.output
    assert cli("purge", "reprots", "--yes").exit_code == 1
    out = cli("purge", "reprots", "--yes", "--undeclared")
    assert out.exit_code == 0 and "purged 3 message(s) from reprots" in out.output
    assert "reprots" not in {q.name for q in taskkit.queue_info(consumers=False, app=stack.app)}  # empty: no longer listed
