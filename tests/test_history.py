"""Run history against a real Redis and two real workers: recorded, read, trimmed, re-run."""

from __future__ import annotations

import json
import time

import pytest
from celery import Celery

import taskkit

from .conftest import wait_until

HISTORY = """
[retry]
backoff = 0.2
jitter = false
[history]
max_value_bytes = 64
"""


@pytest.fixture(scope="module")
def stack(redis_port, tmp_path_factory):
    from .conftest import Stack

    s = Stack(redis_port, tmp_path_factory.mktemp("history"), HISTORY)
    s.start_worker("h1", concurrency=1)
    s.start_worker("h2", concurrency=1)
    yield s
    s.stop()


def run_row(stack, task_id, state, timeout=15):
    def probe():
        df = taskkit.runs(app=stack.app)
        row = df[df["id"] == task_id]
        return [row.iloc[0]] if len(row) and row.iloc[0]["state"] == state else None

    return wait_until(probe, timeout, f"run {task_id} in state {state}", interval=0.1)[0]


def test_success_is_recorded_with_timings(stack):
    res = taskkit.submit("tests.slow_once", args=["hist-ok", 0.5], app=stack.app)
    res.get(timeout=10)
    row = run_row(stack, res.id, "SUCCESS")
    assert row["task"] == "tests.slow_once" and row["queue"] == "default" and row["priority"] == 5
    assert row["worker"].split("@")[0] in ("h1", "h2") and row["attempts"] == 1
    assert 0.5 <= row["runtime"] < 2.0  # it slept 0.5 s
    assert 0 <= row["queue_wait"] < 2.0
    ev = taskkit.events(task="tests.slow_once", app=stack.app)
    mine = ev[ev["id"] == res.id]
    assert list(mine["event"]) == ["sent", "received", "started", "succeeded"]
    assert json.loads(mine.iloc[0]["args"]) == ["hist-ok", 0.5] and mine.iloc[-1]["result_size"] > 0
    assert mine["args"].isna().tolist() == [False, True, True, True]  # `sent` has them: `received` does not repeat them
    assert str(mine["ts"].dtype) == "datetime64[ns, UTC]" and mine["event"].dtype == "category"


def test_retry_then_success_and_failure(stack):
    ok = taskkit.submit("tests.flaky", args=["hist-flaky", 2], app=stack.app)
    bad = taskkit.submit("tests.fails_with", args=["hist-bad", "KeyError"], app=stack.app)
    assert ok.get(timeout=20) == 3
    with pytest.raises(KeyError):
        bad.get(timeout=20)
    row = run_row(stack, ok.id, "SUCCESS")
    assert row["attempts"] == 3 and row["exc_type"] == "ValueError"
    events = taskkit.events(event="retried", app=stack.app)
    assert (events["id"] == ok.id).sum() == 2
    failed = run_row(stack, bad.id, "FAILURE")
    assert failed["exc_type"] == "KeyError" and failed["attempts"] == 1
    tb = taskkit.events(event="failed", app=stack.app)
    assert "KeyError" in tb[tb["id"] == bad.id].iloc[0]["traceback"]


def test_revoked_run_is_recorded(stack):
    res = taskkit.submit("tests.add", args=[1, 1], countdown=3, app=stack.app)
    stack.app.control.revoke(res.id)
    row = run_row(stack, res.id, "REVOKED", timeout=20)
    assert row["task"] == "tests.add"


def test_filters_and_window(stack):
    res = taskkit.submit("tests.add", args=[2, 2], queue="high", app=stack.app)
    res.get(timeout=10)
    run_row(stack, res.id, "SUCCESS")
    assert set(taskkit.events(queue="high", app=stack.app)["id"]) >= {res.id}
    assert res.id not in set(taskkit.events(queue="low", app=stack.app)["id"])
    assert taskkit.events(since="1h", app=stack.app)["id"].str.contains(res.id).any()
    assert taskkit.events(until=time.time() - 3600, app=stack.app).empty
    # queue and worker select runs (only some events carry them): the run stays whole
    row = taskkit.runs(queue="high", app=stack.app).set_index("id").loc[res.id]
    assert row["state"] == "SUCCESS" and row["runtime"] >= 0 and row["worker"].startswith("h")
    by_worker = taskkit.runs(worker=row["worker"], app=stack.app).set_index("id")
    assert by_worker.loc[res.id, "state"] == "SUCCESS" and res.id not in set(taskkit.runs(queue="low", app=stack.app)["id"])


def test_plain_celery_client_is_recorded_worker_side(stack):
    plain = Celery("plain", broker=stack.url, backend=stack.url, set_as_current=False)
    plain.conf.update(task_serializer="json", accept_content=["json"], task_default_queue="default")
    res = plain.send_task("tests.add", args=[20, 22])
    assert res.get(timeout=10) == 42
    row = run_row(stack, res.id, "SUCCESS")
    assert pd_isna(row["sent_at"]) and row["received_at"] is not None and row["queue_wait"] >= 0
    received = taskkit.events(event="received", app=stack.app).set_index("id").loc[res.id]
    assert received["args"] == "[20, 22]" and received["kwargs"] == "{}"  # no `sent`: `received` keeps them (and rerun works)
    assert taskkit.rerun(res.id, app=stack.app).get(timeout=10) == 42
    plain.close()


def pd_isna(value):
    import pandas as pd

    return pd.isna(value)


def test_history_survives_restarting_the_workers(stack):
    res = taskkit.submit("tests.add", args=[3, 4], app=stack.app)
    res.get(timeout=10)
    run_row(stack, res.id, "SUCCESS")
    stack.stop()
    stack.workers.clear()
    stack.app = taskkit.create_app(stack.settings)
    stack.start_worker("h1", concurrency=1)
    stack.start_worker("h2", concurrency=1)
    assert run_row(stack, res.id, "SUCCESS")["task"] == "tests.add"


def test_rerun_of_a_failed_task_uses_the_same_arguments(stack):
    bad = taskkit.submit("tests.fails_with", args=["hist-rerun", "KeyError"], queue="low", priority=7, app=stack.app)
    with pytest.raises(KeyError):
        bad.get(timeout=20)
    run_row(stack, bad.id, "FAILURE")
    again = taskkit.rerun(bad.id, app=stack.app)
    with pytest.raises(KeyError):
        again.get(timeout=20)
    row = run_row(stack, again.id, "FAILURE")
    assert row["rerun_of"] == bad.id and row["queue"] == "low" and row["priority"] == 7
    assert stack.redis.llen("hist-rerun") == 2  # ran twice, same arguments
    fixed = taskkit.rerun(bad.id, args=["hist-rerun", "KeyError"], queue="high", app=stack.app)
    assert run_row(stack, fixed.id, "FAILURE")["queue"] == "high"


def test_long_arguments_are_cut_with_a_marker_and_rerun_refuses(stack):
    res = taskkit.submit("tests.says", args=["x" * 500], app=stack.app)
    res.get(timeout=10)
    run_row(stack, res.id, "SUCCESS")
    sent = wait_until(
        lambda: (df := taskkit.events(event="sent", app=stack.app))[df["id"] == res.id].pipe(lambda d: [d] if len(d) else None), 5, "sent"
    )[0]
    row = sent.iloc[0]
    assert row["cut"] and row["args"].endswith("…[cut]") and len(row["args"]) <= 64
    with pytest.raises(taskkit.TaskkitError, match="were cut"):
        taskkit.rerun(res.id, app=stack.app)
    with pytest.raises(taskkit.UnknownRun):
        taskkit.rerun("no-such-id", app=stack.app)


def _batch(rec, ids, event="sent"):
    for task_id in ids:
        rec.record(event, task="tests.add", id=task_id, args=[1, 2], kwargs={}, index=True)
    rec.flush()


def test_retention_keeps_about_max_events_in_whole_batches(make_stack):
    small = make_stack("[history]\nmax_events = 100\n")
    rec = __import__("taskkit.capture.recorder", fromlist=["recorder_for"]).recorder_for(small.app)
    for b in range(20):
        _batch(rec, [f"t{b}-{i}" for i in range(30)])
    ids = list(taskkit.events(app=small.app)["id"])
    held = int(small.redis.hget(small.app.keys.recorder_stats(), "held"))
    assert held == len(ids) and 100 <= held < 130  # never fewer than max_events, at most one batch more
    assert ids[-1] == "t19-29" and small.redis.xlen(small.app.keys.runs()) == held // 30
    assert small.redis.llen(small.app.keys.run_entries()) == held // 30


def test_retention_trims_by_age(make_stack):
    aged = make_stack('[history]\nmax_age = "2s"\n')
    from taskkit.capture.recorder import recorder_for

    rec = recorder_for(aged.app)
    for b in range(3):
        _batch(rec, [f"old{b}-{i}" for i in range(100)])
    time.sleep(2.5)
    rec.batches = 0  # the next batch trims by age
    _batch(rec, ["new"])
    assert list(taskkit.events(app=aged.app)["id"]) == ["new"]
    assert aged.redis.hget(aged.app.keys.recorder_stats(), "held") == b"1"


def test_a_stream_of_the_first_layout_is_read_counted_and_trimmed(make_stack):
    """A fleet upgrades in place: one-row entries (field v) stay readable, count toward max_events
    and go first; rerun finds arguments in either layout."""
    from taskkit.capture import rows
    from taskkit.capture.recorder import recorded_call, recorder_for

    old = make_stack("[history]\nmax_events = 100\n")
    stream = old.app.keys.runs()
    for i in range(80):
        fields = {"event": "sent", "ts": repr(time.time()), "task": "tests.add", "id": f"v1-{i}", "args": "[1, 2]", "kwargs": "{}"}
        entry = old.redis.xadd(stream, {rows.LEGACY: rows.pack(fields)})
        old.redis.set(old.app.keys.run_index(f"v1-{i}"), entry)
    assert recorded_call(old.app, "v1-3")["args"] == "[1, 2]"
    rec = recorder_for(old.app)
    _batch(rec, [f"v2-{i}" for i in range(50)])  # 130 held: the 30 oldest one-row entries go
    ids = list(taskkit.events(app=old.app)["id"])
    assert ids == [f"v1-{i}" for i in range(30, 80)] + [f"v2-{i}" for i in range(50)]
    assert old.redis.hget(old.app.keys.recorder_stats(), "held") == b"100"
    _batch(rec, [f"v3-{i}" for i in range(60)])  # the rest of the one-row entries, then whole batches
    ids = list(taskkit.events(app=old.app)["id"])
    assert ids == [f"v2-{i}" for i in range(50)] + [f"v3-{i}" for i in range(60)]
    assert recorded_call(old.app, "v2-7")["args"] == "[1, 2]" and recorded_call(old.app, "v3-59")["task"] == "tests.add"


def _held_is_exact(stack):
    held = int(stack.redis.hget(stack.app.keys.recorder_stats(), "held"))
    assert held == len(taskkit.events(app=stack.app))
    return held


def test_retention_stays_exact_while_old_and_new_writers_mix(make_stack):
    """A rolling upgrade: old writers add one-row entries between the batch entries of new ones."""
    from taskkit.capture import rows
    from taskkit.capture.recorder import recorder_for

    mixed = make_stack("[history]\nmax_events = 200\n")
    rec = recorder_for(mixed.app)
    for b in range(30):
        for i in range(7):  # an old writer's events, one entry each
            fields = {"event": "received", "ts": repr(time.time()), "task": "tests.add", "id": f"old{b}-{i}"}
            mixed.redis.xadd(mixed.app.keys.runs(), {rows.LEGACY: rows.pack(fields)})
        _batch(rec, [f"new{b}-{i}" for i in range(25)])
        assert min(32 * (b + 1), 200) <= _held_is_exact(mixed) < 200 + 25 + 7  # exact, never under max_events
    assert taskkit.events(app=mixed.app)["id"].iloc[-1] == "new29-24"


def test_retention_recovers_when_the_stream_is_deleted_by_hand(make_stack):
    cleared = make_stack("[history]\nmax_events = 100\n")
    from taskkit.capture.recorder import recorder_for

    rec = recorder_for(cleared.app)
    for b in range(6):
        _batch(rec, [f"a{b}-{i}" for i in range(30)])
    cleared.redis.delete(cleared.app.keys.runs())  # DEL: the entry list and the count stay behind
    for b in range(8):
        _batch(rec, [f"b{b}-{i}" for i in range(30)])
        assert min(30 * (b + 1), 100) <= _held_is_exact(cleared) < 130


def test_entries_of_another_format_version_are_skipped(make_stack):
    """A newer writer's rows (another VERSION, other columns) never break a read."""
    from taskkit.capture import rows
    from taskkit.capture.recorder import recorder_for

    mixed = make_stack("")
    rec = recorder_for(mixed.app)
    _batch(rec, ["before"])
    newer = rows.SEP.join(["9", "sent", repr(time.time()), "t", "from-the-future", "extra", "columns"])
    mixed.redis.xadd(mixed.app.keys.runs(), {rows.COUNT: 2, rows.BLOCK: newer + "\n" + newer})
    _batch(rec, ["after"])
    page = taskkit.events(app=mixed.app)
    assert list(page["id"]) == ["before", "after"]


def test_since_id_reads_only_what_is_new(make_stack):
    tail = make_stack("")
    from taskkit.capture.recorder import recorder_for

    rec = recorder_for(tail.app)
    _batch(rec, ["a1", "a2"])
    first = taskkit.events(app=tail.app)
    assert list(first["id"]) == ["a1", "a2"] and first.attrs["last_id"]
    same = taskkit.events(since_id=first.attrs["last_id"], app=tail.app)
    assert same.empty and same.attrs["last_id"] == first.attrs["last_id"]
    _batch(rec, ["b1"], event="received")
    new = taskkit.events(since_id=first.attrs["last_id"], app=tail.app)
    assert list(new["id"]) == ["b1"] and new.attrs["last_id"] > first.attrs["last_id"]


def test_since_id_with_a_limit_loses_nothing(make_stack):
    """Reading a stream of batches 7 rows at a time: every event comes back, in order."""
    paged = make_stack("")
    from taskkit.capture.recorder import recorder_for

    rec = recorder_for(paged.app)
    for b in range(3):
        _batch(rec, [f"p{b}-{i}" for i in range(10)])
    seen, last = [], None
    for _ in range(30):
        page = taskkit.events(since_id=last, limit=7, app=paged.app)
        assert len(page) <= 7
        seen += list(page["id"])
        last = page.attrs["last_id"]
        if len(seen) == 30:
            break
    assert seen == [f"p{b}-{i}" for b in range(3) for i in range(10)]
    with pytest.raises(taskkit.InvalidOption, match="since_id"):
        taskkit.runs(since_id=last, app=paged.app)


def cli(stack, *args):
    from click.testing import CliRunner

    from taskkit.cli import main

    return CliRunner().invoke(main, ["--config", str(stack.config_path), *args], env={"TASKKIT_BROKER_URL": stack.url})


def test_report_summarises_the_window(stack):
    ok = [taskkit.submit("tests.add", args=[i, i], app=stack.app) for i in range(3)]
    bad = taskkit.submit("tests.fails_with", args=["hist-report", "KeyError"], app=stack.app)
    for r in ok:
        r.get(timeout=10)
    run_row(stack, bad.id, "FAILURE")
    run_row(stack, ok[-1].id, "SUCCESS")
    from taskkit import reports

    summary = reports.summary(since="1h", app=stack.app)
    add = next(t for t in summary["tasks"] if t["task"] == "tests.add")
    assert add["runs"] >= 3 and add["failure_rate"] == 0 and add["runtime_p50"] is not None and add["wait_p99"] >= 0
    fails = next(t for t in summary["tasks"] if t["task"] == "tests.fails_with")
    assert fails["failed"] >= 1 and fails["failure_rate"] > 0
    assert {"task": "tests.fails_with", "exc_type": "KeyError"}.items() <= summary["top_exceptions"][0].items() or any(
        e["exc_type"] == "KeyError" for e in summary["top_exceptions"]
    )
    table = taskkit.runs(since="1h", app=stack.app)
    per_minute = reports.throughput(table)
    assert per_minute.to_numpy().sum() == table["finished_at"].notna().sum() and "SUCCESS" in per_minute.columns
    top = reports.slowest(table, 2)
    assert len(top) == 2 and top["runtime"].is_monotonic_decreasing and top["runtime"].iloc[0] == table["runtime"].max()
    out = cli(stack, "report", "--since", "1h", "--format", "csv")
    assert out.exit_code == 0 and out.output.splitlines()[0].startswith("task,runs,succeeded,failed,failure_rate,retry_rate")
    page = cli(stack, "report", "--since", "1h", "--format", "html").output
    import xml.etree.ElementTree as ET

    ET.fromstring(page.replace("<!doctype html>", "").replace("<meta charset='utf-8'>", "<meta charset='utf-8'/>"))
    assert "tests.fails_with" in page
    assert json.loads(cli(stack, "report", "--since", "1h").output)["tasks"]


def test_history_and_rerun_cli(stack):
    bad = taskkit.submit("tests.fails_with", args=["hist-cli", "KeyError"], app=stack.app)
    run_row(stack, bad.id, "FAILURE")
    out = cli(stack, "history", "--since", "10m", "--state", "FAILURE")
    assert out.exit_code == 0 and bad.id in out.output and "KeyError" in out.output
    rows = json.loads(cli(stack, "history", "--since", "10m", "--task", "tests.fails_with", "--json").output)
    assert any(r["id"] == bad.id and r["state"] == "FAILURE" for r in rows)
    events = json.loads(cli(stack, "history", "--events", "--since", "10m", "--json").output)
    assert {"sent", "received", "started", "failed"} <= {e["event"] for e in events if e["id"] == bad.id}
    new_id = cli(stack, "rerun", bad.id).output.strip()
    assert run_row(stack, new_id, "FAILURE")["rerun_of"] == bad.id
    out = cli(stack, "rerun", "not-a-run")
    assert out.exit_code == 1 and "no recorded run" in out.output and len(out.output.strip().splitlines()) == 1
    out = cli(stack, "history", "--since", "soon")
    assert out.exit_code == 1 and "expected an age" in out.output


def test_a_redis_hiccup_is_counted_never_raised(tmp_path):
    from taskkit.capture.recorder import Recorder
    from taskkit.config import load_settings

    from .conftest import free_port

    app = taskkit.create_app(
        load_settings(env={"TASKKIT_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0", "TASKKIT_BROKER_TIMEOUT": "0.5"})
    )
    rec = Recorder(app)
    rec.record("started", task="tests.add", id="x")
    rec.flush()  # Redis is down: no exception reaches the caller
    assert rec.errors == 1 and len(rec.buffer) == 1  # kept for the next flush


def test_recorder_counters_are_readable_from_outside_the_process(make_stack):
    stack = make_stack()
    stack.start_worker("counted", concurrency=1)
    before = taskkit.recorder_stats(app=stack.app)
    assert before == {"written": 0, "failed": 0, "dropped": 0}
    taskkit.submit("tests.add", args=[1, 2], app=stack.app).get(timeout=10)
    # sent (this process) + received, started, succeeded (the worker's processes), each in its own batch
    wait_until(lambda: taskkit.recorder_stats(app=stack.app)["written"] == 4, 5, "four events counted")
    from taskkit.capture.recorder import recorder_for

    rec = recorder_for(stack.app)
    rec._unreported = [2, 5]  # as if two writes had failed and five events been dropped while Redis was away
    rec.record("started", task="tests.add", id="y")
    rec.flush()
    assert taskkit.recorder_stats(app=stack.app) == {"written": 5, "failed": 2, "dropped": 5}
