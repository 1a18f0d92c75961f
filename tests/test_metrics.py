"""The Prometheus exporter against real workers, beat and Redis: values, restarts, auth, promtool."""

from __future__ import annotations

import base64
import shutil
import subprocess
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import taskkit
from taskkit import metrics
from taskkit.config import load_settings

from .conftest import free_port, wait_until


def scrape(app, **kwargs) -> dict[tuple[str, tuple], float]:
    """One scrape as {(sample name, sorted labels): value}."""
    text = metrics.exposition(app, **kwargs)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def ended(app, n: int) -> bool:
    runs = taskkit.runs(app=app)
    return (runs["state"].isin(["SUCCESS", "FAILURE"])).sum() >= n


def test_task_counts_and_histograms_match_what_workers_did_and_survive_an_exporter_restart(make_stack):
    stack = make_stack("[retry]\nbackoff = 0.2\njitter = false\n")
    stack.start_worker("counted")
    for i in range(5):
        taskkit.submit("tests.add", args=[i, i], app=stack.app)
    for _ in range(3):
        taskkit.submit("tests.fails_with", args=["mx-fail", "KeyError"], app=stack.app)
    taskkit.submit("tests.flaky", args=["mx-flaky", 2], app=stack.app)  # two retries, then success
    wait_until(lambda: ended(stack.app, 9), 30, "nine runs to end")

    first = scrape(stack.app)
    assert value(first, "taskkit_tasks_total", task="tests.add", queue="default", state="succeeded") == 5
    assert value(first, "taskkit_tasks_total", task="tests.fails_with", queue="default", state="failed") == 3
    assert value(first, "taskkit_tasks_total", task="tests.flaky", queue="default", state="retried") == 2
    assert value(first, "taskkit_tasks_total", task="tests.flaky", queue="default", state="succeeded") == 1
    assert value(first, "taskkit_task_runtime_seconds_count", task="tests.add") == 5
    assert value(first, "taskkit_task_runtime_seconds_bucket", task="tests.add", le="+Inf") == 5
    assert value(first, "taskkit_task_queue_wait_seconds_count", task="tests.flaky") == 3  # one wait per attempt
    assert 0 < value(first, "taskkit_task_queue_wait_seconds_sum", task="tests.flaky") < 10
    assert value(first, "taskkit_dead_letters", queue="default") == 3
    assert value(first, "taskkit_workers") == 1
    worker = next(dict(labels)["worker"] for name, labels in first if name == "taskkit_worker_pool_processes")
    assert value(first, "taskkit_worker_pool_processes", worker=worker) == 2
    assert value(first, "taskkit_queue_consumers", queue="default") == 1
    assert value(first, "taskkit_recorder_events_written_total") >= 9 * 3

    # a fresh exporter (a restart) reads the same counts, and counts what ran while none was running
    for i in range(2):
        taskkit.submit("tests.add", args=[i, 1], app=stack.app)
    wait_until(lambda: ended(stack.app, 11), 20, "two more runs")
    again = scrape(taskkit.create_app(load_settings(stack.config_path, env={"TASKKIT_BROKER_URL": stack.url})))
    assert value(again, "taskkit_tasks_total", task="tests.add", queue="default", state="succeeded") == 7
    assert value(again, "taskkit_tasks_total", task="tests.fails_with", queue="default", state="failed") == 3


def test_queue_depths_at_several_priorities_and_beat(make_stack):
    stack = make_stack('[beat]\nmax_interval = "0.2s"\nlock_timeout = "1.5s"\n')
    for priority in (1, 5, 5, 9):
        taskkit.submit("tests.add", args=[1, 2], priority=priority, app=stack.app)  # no worker: they wait
    taskkit.submit("tests.says", args=["hi"], queue="low", app=stack.app)
    samples = scrape(stack.app, per_level=True)
    assert value(samples, "taskkit_queue_waiting_messages", queue="default") == 4
    assert value(samples, "taskkit_queue_waiting_messages", queue="low") == 1
    assert value(samples, "taskkit_queue_level_waiting_messages", queue="default", priority="5") == 2
    assert value(samples, "taskkit_queue_level_waiting_messages", queue="default", priority="9") == 1
    assert value(samples, "taskkit_queue_unacked_messages", queue="default") == 0
    assert 0 <= value(samples, "taskkit_queue_oldest_waiting_seconds", queue="default") < 10
    assert value(samples, "taskkit_queue_oldest_waiting_seconds", queue="high") is None  # nothing waits there
    assert value(samples, "taskkit_beat_up") == 0
    assert ("taskkit_queue_level_waiting_messages", (("priority", "1"), ("queue", "default"))) not in scrape(stack.app)  # off by default

    stack.start_beat()
    wait_until(lambda: value(scrape(stack.app), "taskkit_beat_up") == 1, 10, "beat to tick")
    samples = scrape(stack.app)
    assert value(samples, "taskkit_beat_tick_age_seconds") < 1.5
    assert sum(1 for name, _ in samples if name == "taskkit_beat_active_info") == 1


def test_a_scrape_with_redis_down_says_so_instead_of_failing():
    app = taskkit.create_app(load_settings(env={"TASKKIT_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0", "TASKKIT_BROKER_TIMEOUT": "1"}))
    samples = scrape(app)
    assert value(samples, "taskkit_redis_up") == 0
    assert value(samples, "taskkit_exporter_collector_success", collector="queues") == 0
    assert value(samples, "taskkit_exporter_scrape_duration_seconds") < 2


def get(url: str, header: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": header} if header else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_endpoint_wants_the_token_or_basic_auth(make_stack):
    stack = make_stack()
    auth = metrics.Auth.from_settings(stack.app, env={metrics.TOKEN_ENV: "s3cret-token", metrics.BASIC_ENV: "prom:pa55"})
    port = free_port()
    served = threading.Event()
    threading.Thread(
        target=metrics.serve,
        args=(f"127.0.0.1:{port}",),
        kwargs={"app": stack.app, "auth": auth, "ready": lambda _: served.set()},
        daemon=True,
    ).start()
    assert served.wait(10)
    url = f"http://127.0.0.1:{port}/metrics"
    assert get(url)[0] == 401
    assert get(url, "Bearer wrong-token")[0] == 401
    assert get(url, "Basic " + base64.b64encode(b"prom:wrong").decode())[0] == 401
    status, body = get(url, "Bearer s3cret-token")
    assert status == 200 and "taskkit_redis_up 1.0" in body
    assert "s3cret-token" not in body and "pa55" not in body
    assert get(url, "Basic " + base64.b64encode(b"prom:pa55").decode())[0] == 200


def test_serve_without_a_token_refuses_in_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from taskkit.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(metrics.TOKEN_ENV, raising=False)
    result = CliRunner().invoke(main, ["metrics", "serve", "--bind", "127.0.0.1:1"])
    assert result.exit_code == 1 and "no metrics token" in result.output and len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(main, ["metrics", "serve", "--bind", "nowhere"])
    assert result.exit_code == 1 and "--bind='nowhere'" in result.output


def test_every_metric_passes_promtool(make_stack):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed: apt-get install prometheus (Debian ships it there)"
    stack = make_stack()
    stack.start_worker("linted")
    taskkit.submit("tests.add", args=[1, 2], app=stack.app).get(timeout=20)
    wait_until(lambda: ended(stack.app, 1), 10, "the run to be recorded")
    text = metrics.exposition(stack.app, per_level=True)
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "taskkit_task_runtime_seconds_bucket" in text


@pytest.fixture(autouse=True)
def _no_stray_token(monkeypatch):
    monkeypatch.delenv(metrics.TOKEN_ENV, raising=False)
