"""submit_many: every call checked first, Celery's own message format, pipelined batches, history."""

from __future__ import annotations

import json

import pytest

import taskkit

from .test_submit import snapshot

VARYING = {("headers", "id"), ("headers", "root_id"), ("headers", "taskkit_sent"), ("properties", "correlation_id"),
           ("properties", "delivery_tag")}  # fmt: skip


def flat(message: dict) -> dict:
    out = {}
    for part, value in message.items():
        for key, inner in value.items() if isinstance(value, dict) else [(None, value)]:
            if (part, key) not in VARYING:
                out[(part, key)] = inner
    return out


def test_a_bulk_message_is_the_message_apply_async_sends(make_stack):
    stack = make_stack()  # no worker: both messages wait side by side
    one = taskkit.submit("tests.add", args=[1, 2], app=stack.app)
    many = taskkit.submit_many("tests.add", [[1, 2]], app=stack.app)
    raw = [json.loads(m) for m in stack.redis.lrange(stack.app.keys.queue("default", 5), 0, -1)]
    by_id = {m["headers"]["id"]: m for m in raw}
    assert set(by_id) == {one.id, many.ids[0]}
    assert flat(by_id[many.ids[0]]) == flat(by_id[one.id])  # field by field, apart from ids, tags and the send time
    bulk = by_id[many.ids[0]]
    assert bulk["headers"]["root_id"] == bulk["properties"]["correlation_id"] == many.ids[0]


def test_calls_of_every_shape_run_and_are_in_the_history(make_stack):
    stack = make_stack()
    calls = [[i, i] for i in range(300)] + [([1], {"y": 5})] + [{"x": 2, "y": 3}]
    sent = taskkit.submit_many("tests.add", calls, batch=100, app=stack.app)
    assert len(sent) == 302 and len(set(sent.ids)) == 302
    assert taskkit.queue_depths(app=stack.app)["default"] == 302
    stack.start_worker("bulk")
    assert sent.wait(timeout=60) == {"SUCCESS": 302}
    values = [taskkit.result(i, app=stack.app)["result"] for i in sent.ids[-2:]]
    assert values == [6, 5]
    assert [r.get(timeout=5) for r in sent.results().results[:3]] == [0, 2, 4]
    runs = taskkit.runs(app=stack.app)
    assert set(runs[runs["state"] == "SUCCESS"]["id"]) == set(sent.ids)
    events = taskkit.events(app=stack.app, event="sent")
    assert set(events["id"]) == set(sent.ids)  # one sent event each, with the arguments
    assert json.loads(events[events["id"] == sent.ids[-1]]["kwargs"].iloc[0]) == {"x": 2, "y": 3}


def test_one_bad_call_queues_nothing_and_is_named(make_stack):
    stack = make_stack()
    taskkit.submit("tests.add", args=[0, 0], app=stack.app)
    before = snapshot(stack.redis)
    with pytest.raises(taskkit.InvalidArguments, match=r"call #3: missing a required argument: 'y'"):
        taskkit.submit_many("tests.add", [[1, 2], [3, 4], [5, 6], [7], [8, 9]], app=stack.app)
    with pytest.raises(taskkit.InvalidArguments, match=r"call #1: expected an args list"):
        taskkit.submit_many("tests.add", [[1, 2], "x"], app=stack.app)
    with pytest.raises(taskkit.InvalidOption, match="priority"):
        taskkit.submit_many("tests.add", [[1, 2]], priority=12, app=stack.app)
    with pytest.raises(taskkit.UnknownTask):
        taskkit.submit_many("tests.nope", [[1]], app=stack.app)
    assert snapshot(stack.redis) == before


def test_the_cli_submits_a_json_lines_file(make_stack, tmp_path):
    from click.testing import CliRunner

    from taskkit.cli import main

    stack = make_stack()
    stack.start_worker("each")
    calls = tmp_path / "calls.jsonl"
    calls.write_text('[1, 2]\n{"x": 3, "y": 4}\n\n{"args": [5], "kwargs": {"y": 6}}\n')
    env = {"TASKKIT_CONFIG": str(stack.config_path), "TASKKIT_BROKER_URL": stack.url}
    out = CliRunner().invoke(main, ["submit", "tests.add", "--each", str(calls), "--wait", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output[out.output.index("{") :]) == {"task": "tests.add", "runs": 3, "states": {"SUCCESS": 3}}
    calls.write_text("[1, 2]\n[1]\n")
    bad = CliRunner().invoke(main, ["submit", "tests.add", "--each", str(calls)], env=env)
    assert bad.exit_code == 1 and "call #1: missing a required argument: 'y'" in bad.output
    calls.write_text("[1, 2]\nnot json\n")
    bad = CliRunner().invoke(main, ["submit", "tests.add", "--each", str(calls)], env=env)
    assert bad.exit_code == 2 and "line 2 of --each is not JSON" in bad.output
