"""The widgets, headless in plain pytest against a real stack: set fields, click buttons, and check
the effect on Redis and the workers, and what the widget shows."""

from __future__ import annotations

import asyncio
import html
import time
import xml.etree.ElementTree as ET

import pytest

import taskkit
import taskkit.widgets as tw
from taskkit import deadletters as dlq
from taskkit.capture.recorder import recorder_for
from taskkit.config import load_settings
from taskkit.tasks import science

from .conftest import Stack, free_port, wait_until


@pytest.fixture(scope="module")
def stack(redis_port, tmp_path_factory):
    s = Stack(redis_port, tmp_path_factory.mktemp("widgets"), "")
    s.start_worker("wid", concurrency=2)
    yield s
    s.stop()


def parses(view) -> str:
    page = view._repr_html_()
    ET.fromstring(page)  # well-formed: escaped values, no bare tags
    return page


def sent_event(stack, task_id):
    recorder_for(stack.app).flush()
    ev = taskkit.events(event="sent", app=stack.app)
    rows = ev[ev["id"] == task_id]
    return rows.iloc[0].to_dict() if len(rows) else None


def test_cluster_view_shows_the_worker_and_three_faces(stack):
    view = tw.ClusterView(autostart=False, app=stack.app)
    page = parses(view)
    worker = next(iter(view.data.workers))
    assert worker.startswith("wid@") and worker in page and "Queues" in page and "var(--jp-" in page
    assert repr(view).startswith("<ClusterView: 1 workers, ")
    bundle = view._repr_mimebundle_()
    assert {"text/plain", "text/html", "application/vnd.jupyter.widget-view+json"} <= bundle.keys()
    assert worker in view.widget.children[1].value  # the live widget shows the same
    assert view.consumers()["default"] == [worker]
    cost = view.data.cost
    assert set(cost) == {"counts", "redis", "workers", "schedules"} and cost["counts"] < 0.5


def test_cluster_view_shows_the_alerts_the_last_health_check_left(make_stack):
    quiet = make_stack("[alerts]\nbacklog = 1\nno_consumer = false\n")
    assert "Alerts firing" not in tw.ClusterView(autostart=False, app=quiet.app)._repr_html_()
    taskkit.submit("tests.add", args=[1, 2], app=quiet.app)  # no worker: it waits
    taskkit.alerts.check(app=quiet.app)
    view = tw.ClusterView(autostart=False, app=quiet.app)
    page = parses(view)
    assert "Alerts firing (1)" in page and "queue default: 1 messages waiting (threshold 1)" in page
    assert ", 1 alerts, " in repr(view)


def test_cluster_view_refreshes_live_on_the_event_loop_and_stops(stack):
    view = tw.ClusterView(autostart=False, app=stack.app)
    assert view.start() is False and not view.running  # no loop: one read, and it says so

    async def live():
        first = view.data.at
        assert view.start(interval=0.05)
        await asyncio.sleep(0)
        assert view.running
        deadline = time.monotonic() + 10
        while view.data.at == first and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        view.stop()
        await asyncio.sleep(0)
        return view.data.at != first

    assert asyncio.run(live()) and not view.running

    async def replaced():
        again = tw.ClusterView(autostart=False, app=stack.app)
        view.start(interval=60)
        again.start(interval=60)  # re-running the cell: the kernel keeps one live view
        await asyncio.sleep(0)
        alive = (view.running, again.running)
        again.stop()
        return alive

    assert asyncio.run(replaced()) == (False, True)


def test_a_worker_that_died_is_listed_as_missing_after_the_timeout(stack):
    key = stack.app.keys.pidbox_bindings()
    ghost = stack.app.keys.worker_of_binding  # what a SIGKILLed worker leaves: its remote-control binding
    member = "\x06\x16\x06\x16ghost@nowhere.celery.pidbox"
    assert ghost(member) == "ghost@nowhere"
    stack.redis.sadd(key, member)
    try:
        snap = taskkit.snapshot(timeout=0.3, app=stack.app)
    finally:
        stack.redis.srem(key, member)
    assert snap.missing == ["ghost@nowhere"] and any(w.startswith("wid@") for w in snap.workers)
    assert 0.3 <= snap.cost["workers"] < 1.0  # the live worker answered; the dead one cost the timeout
    fast = taskkit.snapshot(timeout=0.3, app=stack.app)
    assert fast.missing == [] and fast.cost["workers"] < 0.3  # all named workers answered: no wait for the timeout


def test_an_unreachable_redis_is_one_line_in_the_view_not_a_traceback():
    app = taskkit.create_app(
        load_settings(env={"TASKKIT_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0", "TASKKIT_BROKER_TIMEOUT": "0.5"})
    )
    view = tw.ClusterView(autostart=False, app=app)
    assert view.data is None and view.error.startswith("cannot reach Redis at redis://127.0.0.1:")
    assert "cannot reach Redis" in parses(view) and "cannot reach Redis" in repr(view)
    with pytest.raises(taskkit.BrokerUnavailable, match="cannot reach Redis") as exc:
        tw.connect(app=app)  # the first cell that needs Redis says so, in one line
    assert "\n" not in str(exc.value)


def test_connect_says_which_redis_and_where_from(stack, capsys):
    assert tw.connect(app=stack.app) is None
    assert capsys.readouterr().out.strip() == f"taskkit: {stack.url} (from {stack.config_path})"


def test_launcher_form_submits_with_the_fields_queue_and_priority(stack):
    launcher = tw.TaskLauncher("tests.add", app=stack.app)
    assert launcher.widget is not None  # built: the buttons and fields exist
    assert [f.name for f in launcher.data] == ["x", "y"] and [f.kind for f in launcher.data] == [int, int]
    launcher.inputs["x"].value, launcher.inputs["y"].value = "2", "3"
    launcher._queue.value, launcher._priority.value = "high", 1
    launcher.submit_button.click()
    assert launcher.error is None and launcher.last is not None
    assert launcher.follow.wait(timeout=15).result == 5
    bar = launcher.follow.widget.children[0]
    assert bar.value == bar.max and launcher.follow.data.percent == 100.0  # the bar reached 100%
    sent = wait_until(lambda: sent_event(stack, launcher.last.id), 5, "the sent event")
    assert (sent["queue"], sent["priority"], sent["args"]) == ("high", 1, "[2, 3]")
    parses(launcher)


def test_launcher_shows_bad_input_in_place_and_queues_nothing(stack):
    launcher = tw.TaskLauncher("tests.add", app=stack.app)
    assert launcher.widget is not None  # built: the buttons and fields exist
    launcher.inputs["x"].value = "2"  # y left empty
    launcher.submit_button.click()
    assert launcher.last is None and "y is required; nothing was queued" in launcher._message.value
    launcher.inputs["y"].value = "three"
    launcher.submit_button.click()
    assert launcher.last is None and "y=&#x27;three&#x27;: expected a whole number" in launcher._message.value
    record = launcher.choose("tests.record")
    record.inputs["key"].value, record.inputs["tag"].value = "k", "{not json"
    record.submit_button.click()
    assert record.last is None and "tag: not valid JSON" in record._message.value
    assert [f.kind for f in record.data] == [str, "json"]


def test_progress_follows_a_chord_to_its_last_point(stack):
    res = science.start_sweep([0.2, 0.3], [0.1], replicates=20, days=40, app=stack.app)
    view = tw.progress(res, app=stack.app)
    done = view.wait(timeout=60)
    assert done.state == "SUCCESS" and (done.done, done.total) == (2, 2) and len(done.rows) == 2
    assert len(done.result) == 2 and "attack_rate" in parses(view)


def test_schedule_editor_disables_with_its_button(stack):
    editor = tw.ScheduleEditor(app=stack.app)
    editor.add("w-every", "tests.record", every="1h", args=["w", 1])
    assert editor.widget is not None  # built: the buttons and fields exist
    editor._pick.value = "w-every"
    editor.buttons["Disable"].click()
    assert taskkit.get_schedule("w-every", app=stack.app).enabled is False
    assert "disabled w-every" in parses(editor)
    editor.buttons["Enable"].click()
    assert taskkit.get_schedule("w-every", app=stack.app).enabled is True
    with pytest.raises(taskkit.ScheduleError):
        editor.add("w-bad", "tests.record", cron="0 3 * *", timezone="UTC", args=["w", 1])
    assert "cron=" in editor.error and "w-bad" not in {s.name for s in taskkit.list_schedules(app=stack.app)}
    editor.delete("w-every")


def test_dead_letter_browser_replays_only_after_confirm(stack):
    key = f"wd-{time.time()}"
    res = taskkit.submit("tests.fails_until", args=[key], app=stack.app)
    wait_until(lambda: res.id in {e["id"] for e in dlq.entries(app=stack.app)}, 15, "the dead letter")
    browser = tw.DeadLetterBrowser(task="tests.fails_until", app=stack.app)
    assert browser.widget is not None  # built: the buttons and fields exist
    browser._pick.value = res.id
    assert browser.selected["exc_type"] == "KeyError" and "Traceback" in browser.selected["traceback"]
    last_line = browser.selected["traceback"].strip().splitlines()[-1]
    assert html.escape(last_line) in parses(browser)  # the whole traceback, not a cell's first 60 characters
    browser.buttons["Replay"].click()
    assert "confirm() to send" in browser.message and not dlq.get(res.id, app=stack.app)["replayed"]  # asked, not done
    stack.redis.set(f"{key}:fixed", 1)
    browser.buttons["Confirm"].click()
    letter = dlq.get(res.id, app=stack.app)
    assert letter["replayed"] and taskkit.wait(letter["replay_id"], timeout=15, app=stack.app)["state"] == "SUCCESS"
    assert "replayed 1" in parses(browser)


def test_runs_explorer_filters_and_plots(stack):
    for i in range(3):
        taskkit.submit("tests.add", args=[i, i], app=stack.app).get(timeout=10)
    recorder_for(stack.app).flush()
    explorer = tw.RunsExplorer(since="1h", app=stack.app)
    assert explorer.widget is not None  # built: the buttons and fields exist
    explorer._task.value = "tests.add"
    explorer.load_button.click()
    assert explorer.filters["task"] == "tests.add" and set(explorer.data["task"].astype(str)) == {"tests.add"}
    assert len(explorer.data) >= 3 and explorer.per_task().iloc[0]["runs"] == len(explorer.data)
    fig = explorer.plot()
    assert [ax.get_title() for ax in fig.axes] == [
        "runs finished per minute",
        "failure and retry rate",
        "runtime per task",
        "queue wait per task",
    ]
    assert "tests.add" in parses(explorer)
