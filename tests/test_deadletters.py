"""Dead letters against a real Redis and two real workers: stored, listed, replayed safely."""

from __future__ import annotations

import json
import time

import pytest
from celery import Celery

import taskkit
from taskkit import deadletters as dlq

from .conftest import Stack, wait_until

CONFIG = """
[broker]
visibility_timeout = 30
[limits]
time_limit = 2
soft_time_limit = 1
[retry]
backoff = 0.1
backoff_max = 1
jitter = false
"""


@pytest.fixture(scope="module")
def stack(redis_port, tmp_path_factory):
    s = Stack(redis_port, tmp_path_factory.mktemp("dlq"), CONFIG)
    s.start_worker("d1", concurrency=1)
    s.start_worker("d2", concurrency=1)
    yield s
    s.stop()


def dead(stack, task_id, timeout=15):
    return wait_until(lambda: _get(stack, task_id), timeout, f"dead letter {task_id}", interval=0.1)


def _get(stack, task_id):
    try:
        return dlq.get(task_id, app=stack.app)
    except taskkit.UnknownDeadLetter:
        return None


def test_retries_exhausted_is_a_dead_letter_with_everything(stack):
    res = taskkit.submit("tests.fails_with", args=["dl-conn", "ConnectionError"], queue="high", priority=2, app=stack.app)
    with pytest.raises(ConnectionError):
        res.get(timeout=20)
    e = dead(stack, res.id)
    assert (e["task"], e["queue"], e["priority"]) == ("tests.fails_with", "high", 2)
    assert e["args"] == ["dl-conn", "ConnectionError"] and e["kwargs"] == {}
    assert e["exc_type"] == "ConnectionError" and "boom" in e["exc_message"] and "Traceback" in e["traceback"]
    assert e["attempts"] == 4 and e["worker"].split("@")[0] in ("d1", "d2") and not e["replayed"]


def test_time_limit_and_invalid_input_and_unknown_task_are_dead_letters(stack):
    soft = taskkit.submit("tests.sleeps", args=[10], app=stack.app)
    hard = taskkit.submit("tests.stubborn", args=[10], queue="high", priority=1, app=stack.app)
    assert dead(stack, soft.id)["exc_type"] == "SoftTimeLimitExceeded"
    # the hard limit is handled by the worker's main process: queue and priority come from the history
    e = dead(stack, hard.id)
    assert (e["exc_type"], e["queue"], e["priority"]) == ("TimeLimitExceeded", "high", 1)
    plain = Celery("plain", broker=stack.url, set_as_current=False)
    plain.conf.update(task_serializer="json", accept_content=["json"], task_default_queue="low")
    bad_args = plain.send_task("tests.add", args=[1])  # a plain client skips taskkit's checks
    assert dead(stack, bad_args.id)["exc_type"] == "TypeError"
    unknown = plain.send_task("tests.nobody_has_this", args=[1, 2])
    e = dead(stack, unknown.id)
    assert (e["exc_type"], e["queue"], e["args"]) == ("NotRegistered", "low", [1, 2])
    plain.close()


def test_list_filters(stack):
    key = f"dl-list-{time.time()}"
    res = taskkit.submit("tests.fails_until", args=[key], queue="low", app=stack.app)
    dead(stack, res.id)
    assert res.id in [e["id"] for e in dlq.entries(app=stack.app, queue="low")]
    assert res.id not in [e["id"] for e in dlq.entries(app=stack.app, queue="high")]
    assert res.id in [e["id"] for e in dlq.entries(app=stack.app, task="tests.fails_until", exc_type="KeyError", since="1m")]
    assert res.id not in [e["id"] for e in dlq.entries(app=stack.app, exc_type="ValueError")]
    assert res.id not in [e["id"] for e in dlq.entries(app=stack.app, until=time.time() - 60)]


def test_replay_succeeds_once_then_needs_force(stack):
    key = f"dl-replay-{time.time()}"
    res = taskkit.submit("tests.fails_until", args=[key], app=stack.app)
    dead(stack, res.id)
    stack.redis.set(f"{key}:fixed", 1)
    [done] = dlq.replay(res.id, app=stack.app, queue="high")
    assert done["status"] == "claimed" and done["queue"] == "high"
    assert stack.app.AsyncResult(done["replay_id"]).get(timeout=10) == "high"
    assert dlq.get(res.id, app=stack.app)["replayed"]
    with pytest.raises(taskkit.AlreadyReplayed, match="force"):
        dlq.replay(res.id, app=stack.app)
    assert int(stack.redis.get(key)) == 2  # the failure and one replay
    [again] = dlq.replay(res.id, app=stack.app, force=True)
    stack.app.AsyncResult(again["replay_id"]).get(timeout=10)
    assert int(stack.redis.get(key)) == 3 and again["replay_id"] != done["replay_id"]
    # the replay is in the run history like any sent task (the client writes it within ~50 ms)
    wait_until(lambda: done["replay_id"] in set(taskkit.events(event="sent", app=stack.app)["id"]), 5, "the replay's sent event")


def test_replay_with_edited_args_is_checked_before_anything_changes(stack):
    key = f"dl-edit-{time.time()}"
    res = taskkit.submit("tests.fails_until", args=[key], app=stack.app)
    dead(stack, res.id)
    with pytest.raises(taskkit.InvalidArguments):
        dlq.replay(res.id, app=stack.app, args=[key, "extra"])
    assert "replay_id" not in dlq.get(res.id, app=stack.app)  # not even claimed
    stack.redis.set(f"{key}-2:fixed", 1)
    [done] = dlq.replay(res.id, app=stack.app, args=[f"{key}-2"])
    stack.app.AsyncResult(done["replay_id"]).get(timeout=10)
    assert int(stack.redis.get(f"{key}-2")) == 1


def test_a_crash_between_claim_and_publish_loses_nothing(stack):
    key = f"dl-crash-{time.time()}"
    res = taskkit.submit("tests.fails_until", args=[key], app=stack.app)
    dead(stack, res.id)
    stack.redis.set(f"{key}:fixed", 1)
    status, replay_id = dlq.claim(res.id, app=stack.app)  # ...and the process dies here
    assert status == "claimed"
    assert res.id in [e["id"] for e in dlq.entries(app=stack.app)]  # still there
    with pytest.raises(taskkit.ReplayInProgress):  # within the lease: another replay waits
        dlq.replay(res.id, app=stack.app)
    [done] = dlq.replay(res.id, app=stack.app, lease=0)  # after the lease: resumed
    assert done == {"id": res.id, "replay_id": replay_id, "queue": "default", "status": "resume"}
    stack.app.AsyncResult(replay_id).get(timeout=10)
    assert int(stack.redis.get(key)) == 2  # the failure and exactly one replay


def test_a_crash_after_publish_does_not_send_twice(stack):
    key = f"dl-sent-{time.time()}"
    res = taskkit.submit("tests.fails_until", args=[key], app=stack.app)
    dead(stack, res.id)
    stack.redis.set(f"{key}:fixed", 1)
    _, replay_id = dlq.claim(res.id, app=stack.app)
    taskkit.submit("tests.fails_until", args=[key], task_id=replay_id, app=stack.app)  # published, then the crash
    stack.app.AsyncResult(replay_id).get(timeout=10)
    wait_until(lambda: stack.redis.exists(stack.app.keys.run_index(replay_id)), 5, "the sent event")
    [done] = dlq.replay(res.id, app=stack.app, lease=0)
    assert done["status"] == "confirmed"
    time.sleep(0.5)
    assert int(stack.redis.get(key)) == 2 and dlq.get(res.id, app=stack.app)["replayed"]


def test_drop_and_purge(stack):
    ids = []
    for n in range(3):
        res = taskkit.submit("tests.fails_until", args=[f"dl-drop-{n}-{time.time()}"], queue="low", app=stack.app)
        ids.append(res.id)
    for task_id in ids:
        dead(stack, task_id)
    assert dlq.drop([ids[0], "nope"], app=stack.app) == 1
    with pytest.raises(taskkit.UnknownDeadLetter):
        dlq.get(ids[0], app=stack.app)
    low = len(dlq.entries(app=stack.app, queue="low"))
    assert dlq.count(queue="low", app=stack.app) == low == dlq.counts(app=stack.app)["low"] >= 2
    assert dlq.count(app=stack.app) == sum(dlq.counts(app=stack.app).values()) == len(dlq.entries(app=stack.app))
    assert dlq.purge(app=stack.app, queue="low") == low >= 2
    assert "low" not in dlq.counts(app=stack.app) and dlq.count(queue="low", app=stack.app) == 0
    assert dlq.entries(app=stack.app, queue="low") == []
    assert json.loads(json.dumps(dlq.entries(app=stack.app)))  # plain data: other queues remain


def test_dlq_cli(stack):
    from click.testing import CliRunner

    from taskkit.cli import main

    def cli(*args, input=None):
        return CliRunner().invoke(main, ["--config", str(stack.config_path), *args], env={"TASKKIT_BROKER_URL": stack.url}, input=input)

    key = f"dl-cli-{time.time()}"
    res = taskkit.submit("tests.fails_until", args=[key], queue="low", app=stack.app)
    dead(stack, res.id)
    listing = cli("dlq", "list", "--queue", "low")
    assert listing.exit_code == 0 and res.id in listing.output and "KeyError" in listing.output
    shown = cli("dlq", "show", res.id)
    assert "Traceback" in shown.output and "tests.fails_until" in shown.output
    stack.redis.set(f"{key}:fixed", 1)
    replayed = json.loads(cli("dlq", "replay", res.id, "--json").output)
    stack.app.AsyncResult(replayed[0]["replay_id"]).get(timeout=10)
    again = cli("dlq", "replay", res.id)
    assert again.exit_code == 1 and "already replayed" in again.output and "--force" in again.output
    assert cli("dlq", "replay", res.id, "--force").exit_code == 0
    refused = cli("dlq", "purge", "--queue", "low", input="n\n")
    assert refused.exit_code == 1 and dlq.get(res.id, app=stack.app)
    assert cli("dlq", "purge", "--queue", "low", "--yes").exit_code == 0
    out = cli("dlq", "show", res.id)
    assert out.exit_code == 1 and "no dead letter" in out.output
