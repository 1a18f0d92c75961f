"""Submitting: routing lands messages in the right Redis lists; bad calls queue nothing."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

import taskkit
from taskkit.config import load_settings

ROUTED = """
[broker]
visibility_timeout = "20m"
[limits]
time_limit = "5m"
soft_time_limit = "4m"
[queues.reports]
priority = 6
[[routes]]
match = "tests.rec*"
queue = "reports"
[[routes]]
match = "tests.add"
queue = "high"
priority = 1
"""


def snapshot(r) -> dict:
    """Every key with its type and size: proof that nothing was written."""
    out = {}
    for key in r.scan_iter():
        kind = r.type(key).decode()
        size = {"list": r.llen, "zset": r.zcard, "hash": r.hlen, "set": r.scard, "string": r.strlen, "stream": r.xlen}[kind](key)
        out[key] = (kind, size)
    return out


def test_routing_lands_each_task_in_its_queue_and_priority_list(make_stack):
    stack = make_stack(ROUTED)  # no worker: messages stay where routing put them
    keys = stack.app.keys
    taskkit.submit("tests.record", args=["k", 1], app=stack.app)  # route → reports, its default 6
    taskkit.submit("tests.add", args=[1, 2], app=stack.app)  # route → high, priority 1
    taskkit.submit("tests.says", args=["hi"], app=stack.app)  # no rule → default, 5
    taskkit.submit("tests.says", args=["hi"], queue="low", app=stack.app)  # explicit queue → its default 8
    taskkit.submit("tests.says", args=["hi"], queue="critical", priority=2, app=stack.app)
    r = stack.redis
    assert r.llen(keys.queue("reports", 6)) == 1
    assert r.llen(keys.queue("high", 1)) == 1
    assert r.llen(keys.queue("default", 5)) == 1
    assert r.llen(keys.queue("low", 8)) == 1
    assert r.llen(keys.queue("critical", 2)) == 1
    assert taskkit.queue_depths(app=stack.app) == {"critical": 1, "high": 1, "default": 1, "low": 1, "reports": 1}


def test_explain_names_the_deciding_rule(make_stack):
    stack = make_stack(ROUTED)
    d = taskkit.explain_route("tests.add", app=stack.app)
    assert (d.queue, d.priority) == ("high", 1)
    assert d.decided_by["queue"] == "route #1 'tests.add'"
    flaky = taskkit.explain_route("tests.flaky", app=stack.app)
    assert flaky.retry.on == ("ValueError",) and flaky.retry.max_retries == 3
    assert flaky.decided_by["retry"] == "[retry] defaults + task option"  # jitter etc. come from [retry]


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        (dict(name="tests.nope"), taskkit.UnknownTask, "did you mean"),
        (dict(name="tests.add", args=[1]), taskkit.InvalidArguments, "missing a required argument: 'y'"),
        (dict(name="tests.add", args=[1, 2, 3]), taskkit.InvalidArguments, "too many positional"),
        (dict(name="tests.add", args=[1, 2], kwargs={"z": 2}), taskkit.InvalidArguments, "unexpected keyword"),
        (dict(name="tests.add", args=[1, {2, 3}]), taskkit.InvalidArguments, "not JSON-serialisable"),
        (dict(name="tests.add", args=[1, 2], queue="nowhere"), taskkit.UnknownQueue, "declared:"),
        (dict(name="tests.add", args=[1, 2], priority=10), taskkit.InvalidOption, "0-9"),
        (dict(name="tests.add", args=[1, 2], countdown=1201), taskkit.InvalidOption, "visibility_timeout"),
        (dict(name="tests.add", args=[1, 2], countdown=-5), taskkit.InvalidOption, "countdown=-5: expected a number of seconds"),
        (dict(name="tests.add", args=[1, 2], countdown="soon"), taskkit.InvalidOption, "countdown='soon'"),
        (dict(name="tests.add", args=[1, 2], eta="tomorrow"), taskkit.InvalidOption, "eta='tomorrow': an ISO time"),
        (dict(name="tests.add", args=[1, 2], eta=17), taskkit.InvalidOption, "eta=17: a datetime"),
        (dict(name="tests.add", args=[1, 2], expires=-1), taskkit.InvalidOption, "expires=-1: expected a number of seconds"),
        (dict(name="tests.add", args=[1, 2], expires="later"), taskkit.InvalidOption, "expires='later'"),
        (dict(name="tests.add", args=[1, 2], eta=datetime.now(UTC) + timedelta(hours=1)), taskkit.InvalidOption, "visibility_timeout"),
        (dict(name="tests.add", args=[1, 2], eta=datetime.now() + timedelta(minutes=1)), taskkit.InvalidOption, "naive"),
    ],
)
def test_bad_calls_raise_before_anything_is_queued(make_stack, call, error, text):
    stack = make_stack(ROUTED)
    taskkit.submit("tests.add", args=[0, 0], app=stack.app)  # something already waiting
    before = snapshot(stack.redis)
    with pytest.raises(error) as err:
        taskkit.submit(**call, app=stack.app)
    assert text in str(err.value)
    assert "\n" not in str(err.value)
    assert snapshot(stack.redis) == before


def test_delay_and_apply_async_are_checked_too(make_stack):
    stack = make_stack(ROUTED)
    add = stack.app.task_named("tests.add")
    with pytest.raises(taskkit.InvalidArguments):
        add.delay(1)
    with pytest.raises(taskkit.InvalidOption):
        add.apply_async((1, 2), countdown=3600)
    assert snapshot(stack.redis) == {}


def test_unreachable_redis_fails_fast_with_the_url_masked(tmp_path):
    port = _free_port()
    settings = load_settings(env={"TASKKIT_BROKER_URL": f"redis://:hunter2@127.0.0.1:{port}/0", "TASKKIT_BROKER_TIMEOUT": "1"})
    app = taskkit.create_app(settings)
    start = time.monotonic()
    with pytest.raises(taskkit.BrokerUnavailable) as err:
        taskkit.submit("taskkit.ops.health", app=app)
    assert time.monotonic() - start < 2
    message = str(err.value)
    assert f"redis://:***@127.0.0.1:{port}/0" in message and "hunter2" not in message
    assert "taskkit dev up" in message and "\n" not in message


def test_a_redis_that_never_answers_fails_within_the_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(listener.accept()) for _ in range(16)], daemon=True).start()
    port = listener.getsockname()[1]
    try:
        app = taskkit.create_app(load_settings(env={"TASKKIT_BROKER_URL": f"redis://127.0.0.1:{port}/0", "TASKKIT_BROKER_TIMEOUT": "1"}))
        start = time.monotonic()
        with pytest.raises(taskkit.BrokerUnavailable, match="Timeout"):
            taskkit.submit("taskkit.ops.health", app=app)
        assert time.monotonic() - start < 2.5
    finally:
        listener.close()
        for conn, _ in accepted:
            conn.close()


def test_eager_mode_runs_in_process_without_redis(caplog, monkeypatch):
    import taskkit.app

    monkeypatch.setattr(taskkit.app, "_eager_said", False)
    with caplog.at_level("WARNING", logger="taskkit.app"):
        app = taskkit.create_app(load_settings(env={"TASKKIT_EAGER": "true", "TASKKIT_BROKER_URL": "redis://127.0.0.1:1/0"}))
        taskkit.create_app(load_settings(env={"TASKKIT_EAGER": "true"}))
    assert [r.message for r in caplog.records].count("taskkit: eager mode: tasks run in this process, without Redis or a worker") == 1
    res = taskkit.submit("taskkit.science.simulate", args=[0.3, 0.1], kwargs={"replicates": 5, "days": 20}, app=app)
    assert res.get()["replicates"] == 5
    with pytest.raises(taskkit.InvalidArguments):  # still checked
        taskkit.submit("taskkit.science.simulate", args=[0.3], app=app)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_task_declared_queue_gets_that_queues_default_priority(make_stack):
    stack = make_stack(ROUTED)
    taskkit.submit("tests.on_low", app=stack.app)  # declared queue="low": priority 8, not the default 5
    assert stack.redis.llen(stack.app.keys.queue("low", 8)) == 1
    d = taskkit.explain_route("tests.on_low", app=stack.app)
    assert (d.queue, d.priority, d.decided_by["queue"]) == ("low", 8, "task option")


def test_a_message_over_the_size_limit_is_refused_before_anything_is_queued(make_stack):
    stack = make_stack('[limits]\nmax_message_bytes = "1MB"\n')
    before = snapshot(stack.redis)
    big = "x" * 1_200_000
    with pytest.raises(taskkit.InvalidArguments, match=r"1,200,\d+ bytes as JSON, over limits.max_message_bytes \(1,000,000\)"):
        taskkit.submit("tests.says", args=[big], app=stack.app)
    with pytest.raises(taskkit.ScheduleError, match=r"over limits\.max_message_bytes"):
        taskkit.add_schedule("big", "tests.says", every="1h", args=[big], app=stack.app)
    assert snapshot(stack.redis) == before  # nothing queued, nothing stored
    assert taskkit.submit("tests.says", args=["x" * 900_000], app=stack.app).id  # under the limit: queued


def test_an_expired_message_is_dropped_unrun(make_stack):
    stack = make_stack()
    res = taskkit.submit("tests.record", args=["expired", 1], expires=0.5, app=stack.app)
    time.sleep(1.0)
    stack.start_worker("late", concurrency=1)
    assert taskkit.wait(res.id, timeout=15, app=stack.app)["state"] == "REVOKED"
    assert stack.redis.llen("expired") == 0  # it never ran


def test_a_taskkit_channel_keeps_one_redis_client_per_pool(shared_stack):
    """taskkit.transport: kombu builds a redis-py client per command; a taskkit app's channel keeps one."""
    from celery import Celery

    with shared_stack.app.connection_for_write() as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second and first.ping()
        channel._pool = None  # what kombu does with a lost connection: a new pool gets a new client
        with channel.conn_or_acquire() as third:
            assert third is not first and third.connection_pool is channel.pool
    plain = Celery(broker=shared_stack.url, set_as_current=False)
    with plain.connection_for_write() as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is not second  # a plain Celery app in the same process keeps kombu's behaviour
    plain.close()
