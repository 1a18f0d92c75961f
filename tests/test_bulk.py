"""submit_many and submit_chord: every call checked first, Celery's own message format, pipelined batches, history."""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import subprocess
import sys

import pytest
from celery import chord, group

import taskkit
from taskkit.bulk import submit_chord
from taskkit.config import load_settings

from .conftest import ROOT, wait_until
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
    batches, ended = [], []
    sent = taskkit.submit_many("tests.add", calls, batch=100, on_batch=lambda *a: batches.append(a), app=stack.app)
    assert len(sent) == 302 and len(set(sent.ids)) == 302
    assert batches == [(100, 302), (200, 302), (300, 302), (302, 302)]  # after each batch is in Redis
    assert taskkit.queue_depths(app=stack.app)["default"] == 302
    stack.start_worker("bulk")
    assert sent.wait(timeout=60, on_progress=lambda *a: ended.append(a)) == {"SUCCESS": 302}
    assert ended[-1] == (302, 302) and ended == sorted(ended) and len(set(ended)) == len(ended)  # only when it moves
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
    assert json.loads(out.output) == {"task": "tests.add", "runs": 3, "states": {"SUCCESS": 3}}  # no progress off a terminal
    calls.write_text("[1, 2]\n[1]\n")
    bad = CliRunner().invoke(main, ["submit", "tests.add", "--each", str(calls)], env=env)
    assert bad.exit_code == 1 and "call #1: missing a required argument: 'y'" in bad.output
    calls.write_text("[1, 2]\nnot json\n")
    bad = CliRunner().invoke(main, ["submit", "tests.add", "--each", str(calls)], env=env)
    assert bad.exit_code == 2 and "line 2 of --each is not JSON" in bad.output


# ------------------------------------------------------------ a plain Celery worker


def start_plain_worker(stack, name: str = "plain") -> subprocess.Popen:
    """`celery -A tests.plain_app worker`: a plain Celery app, no taskkit setting in its environment."""
    env = {k: v for k, v in stack.env.items() if not k.startswith("TASKKIT_")}
    env["PLAIN_BROKER_URL"] = stack.url
    argv = [sys.executable, "-m", "celery", "-A", "tests.plain_app", "worker", "-n", f"{name}@%h", "-c", "2", "-Q", "default",
            "--loglevel", "INFO", "--logfile", str(stack.dir / f"{name}.log")]  # fmt: skip
    with open(stack.dir / f"{name}.out", "wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    stack.workers.append(proc)  # stopped with the stack's own workers, by process group
    hostname = f"{name}@{socket.gethostname()}"
    wait_until(lambda: stack.app.control.ping(destination=[hostname], timeout=0.3), 30, "the plain Celery worker")
    return proc


def test_a_plain_celery_worker_runs_bulk_messages_and_chords(make_stack):
    stack = make_stack()  # no taskkit worker: only the plain one below consumes
    sent = taskkit.submit_many("tests.add", [[i, 1] for i in range(120)], batch=50, app=stack.app)
    urgent = taskkit.submit_many("tests.add", [{"x": 2, "y": 3}], priority=0, app=stack.app)  # another priority list
    header = [stack.app.signature("tests.add", (i, i)) for i in range(30)]
    res = submit_chord(header, stack.app.signature("tests.says"), batch=7, app=stack.app)
    start_plain_worker(stack)
    assert sent.wait(timeout=60) == {"SUCCESS": 120} and urgent.wait(timeout=10) == {"SUCCESS": 1}
    assert [r.get(timeout=10) for r in sent.results().results[:3]] == [1, 2, 3]
    assert taskkit.result(urgent.ids[0], app=stack.app)["result"] == 5
    assert res.get(timeout=60) == [2 * i for i in range(30)]  # the body got the header's results, in header order
    received = taskkit.events(app=stack.app, event="received")
    assert not set(received["id"]) & set(sent.ids)  # taskkit's consumer played no part


# ------------------------------------------------------------ chords


def sweep_signatures(app, priority_of_last=None):
    """A header like start_sweep's, its last point on another priority (another list), and the body."""
    header = [
        app.signature("taskkit.science.simulate", (b, 0.1), {"replicates": 5, "days": 20, "seed": n}) for n, b in enumerate((0.2, 0.3, 0.4))
    ]
    if priority_of_last is not None:
        header[-1].set(priority=priority_of_last)
    return header, app.signature("taskkit.science.collect")


def test_a_bulk_chord_header_message_is_the_one_celerys_chord_sends(make_stack):
    stack = make_stack()  # no worker: the messages wait side by side
    stack.app.task_named("taskkit.science.simulate")  # registered, as start_sweep finds it
    header, body = sweep_signatures(stack.app, priority_of_last=2)
    celery_made = chord(header, app=stack.app)(body)
    header, body = sweep_signatures(stack.app, priority_of_last=2)
    bulk = submit_chord(header, body, app=stack.app)
    raw = [json.loads(m) for level in (5, 2) for m in stack.redis.lrange(stack.app.keys.queue("default", level), 0, -1)]
    assert len(raw) == 6

    def by_index(res):
        out = {}
        for m in raw:
            if m["headers"]["group"] == res.parent.id:
                text = json.dumps(m | {"body": json.loads(base64.b64decode(m["body"]))})
                for real, alias in ((res.parent.id, "GROUP"), (res.id, "BODY")):
                    text = text.replace(real, alias)
                out[m["headers"]["group_index"]] = json.loads(text)
        return out

    mine, celerys = by_index(bulk), by_index(celery_made)
    assert set(mine) == set(celerys) == {0, 1, 2}
    for index in mine:  # field by field, apart from ids, tags and the send time; the body compared whole
        assert flat(mine[index]) == flat(celerys[index]), index
    assert mine[2]["properties"]["priority"] == 2 and mine[0]["body"][2]["chord"]["task"] == "taskkit.science.collect"
    assert [r.id for r in bulk.parent.results] == [mine[i]["headers"]["id"] for i in range(3)]
    size = stack.app.backend.get_key_for_group(bulk.parent.id, ".s")  # what the Redis backend counts results against
    assert stack.redis.get(size) == stack.redis.get(stack.app.backend.get_key_for_group(celery_made.parent.id, ".s")) == b"3"


def test_a_bulk_chord_fires_its_body_once_with_the_results_in_order(make_stack):
    stack = make_stack()
    stack.start_worker("chord")
    batches = []
    header = [stack.app.signature("tests.add", (i, 1)) for i in range(250)]
    res = submit_chord(header, stack.app.signature("tests.says"), batch=100, on_batch=lambda *a: batches.append(a), app=stack.app)
    assert batches == [(100, 250), (200, 250), (250, 250)]
    assert res.get(timeout=90) == [i + 1 for i in range(250)]
    assert res.parent.completed_count() == 250
    assert submit_chord([], stack.app.signature("tests.says"), app=stack.app).get(timeout=30) == []  # as Celery's: the body at once

    def body_runs():
        events = taskkit.events(app=stack.app, event="received")
        return len(events[events["id"] == res.id])

    wait_until(body_runs, 10, "the body's received event")
    assert body_runs() == 1
    sent = taskkit.events(app=stack.app, event="sent")
    assert set(r.id for r in res.parent.results) <= set(sent["id"])  # the header's sent events, as submit_many's


def test_a_bad_chord_queues_nothing_and_is_named(make_stack):
    stack = make_stack()
    app = stack.app
    before = snapshot(stack.redis)
    says = app.signature("tests.says")
    with pytest.raises(taskkit.InvalidArguments, match=r"header #1: missing a required argument: 'y'"):
        submit_chord([app.signature("tests.add", (1, 2)), app.signature("tests.add", (1,))], says, app=app)
    with pytest.raises(taskkit.InvalidArguments, match=r"chord body: too many positional arguments"):
        submit_chord([app.signature("tests.add", (1, 2))], app.signature("tests.record", ("k", "t")), app=app)
    with pytest.raises(taskkit.InvalidOption, match=r"header #0=.*expected the signature of one task call"):
        submit_chord([group(app.signature("tests.add", (1, 2)))], says, app=app)
    with pytest.raises(taskkit.InvalidOption, match=r"link=.*header #0: a bulk chord header signature takes only"):
        submit_chord([app.signature("tests.add", (1, 2), link=says)], says, app=app)
    with pytest.raises(taskkit.InvalidOption, match="priority"):
        submit_chord([app.signature("tests.add", (1, 2), priority=12)], says, app=app)
    with pytest.raises(taskkit.UnknownTask):
        submit_chord([app.signature("tests.nope", (1,))], says, app=app)
    assert snapshot(stack.redis) == before


def test_an_eager_chord_runs_in_process():
    app = taskkit.create_app(load_settings(env={"TASKKIT_EAGER": "true"}))
    header, body = sweep_signatures(app)
    assert [row["beta"] for row in submit_chord(header, body, app=app).get()] == [0.2, 0.3, 0.4]


# ------------------------------------------------------------ progress on a terminal


def test_the_cli_shows_progress_on_a_terminal_only(make_stack, tmp_path):
    stack = make_stack()
    stack.start_worker("tty")
    calls = tmp_path / "calls.jsonl"
    calls.write_text("".join(f"[{i}, {i}]\n" for i in range(40)))
    master, slave = os.openpty()  # stderr is a terminal; stdout (what a script reads) is a pipe
    argv = [sys.executable, "-m", "taskkit.cli", "submit", "tests.add", "--each", str(calls), "--wait", "--json"]
    proc = subprocess.Popen(argv, env=stack.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    shown = b""
    while True:  # read the terminal as it is written (a full pty would block the CLI)
        ready, _, _ = select.select([master], [], [], 60)
        assert ready, "the CLI wrote nothing to its terminal for 60s"
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the CLI closed its terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, shown
    assert json.loads(out) == {"task": "tests.add", "runs": 40, "states": {"SUCCESS": 40}}
    text = shown.decode()
    assert "publishing" in text and "waiting" in text and "40/40" in text
