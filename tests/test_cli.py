"""The `taskkit` CLI against a real Redis and worker: tables, --json, one-line errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from taskkit.cli import main


@pytest.fixture
def cli(shared_stack, monkeypatch):
    monkeypatch.setenv("TASKKIT_BROKER_URL", shared_stack.url)

    def run(*args: str):
        return CliRunner().invoke(main, ["--config", str(shared_stack.config_path), *args])

    return run


def test_submit_and_wait_prints_the_result(cli):
    out = cli("submit", "tests.add", "--args", "[2, 40]", "--wait", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["result"] == 42


def test_submit_then_result(cli):
    task_id = cli("submit", "tests.add", "--args", "[1, 1]").output.strip()
    out = cli("result", task_id, "--json")
    for _ in range(50):
        if json.loads(out.output)["state"] == "SUCCESS":
            break
        out = cli("result", task_id, "--json")
    assert json.loads(out.output)["result"] == 2


def test_failed_task_with_wait_exits_1(cli):
    out = cli("submit", "tests.fails_with", "--args", '["cli-key", "KeyError"]', "--wait")
    assert out.exit_code == 1 and "KeyError" in out.output


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["submit", "tests.nope"], 1, "unknown task 'tests.nope'"),
        (["submit", "tests.add", "--args", "[1]"], 1, "missing a required argument"),
        (["submit", "tests.add", "--args", "[1,"], 2, "not valid JSON"),
        (["submit", "tests.add", "--args", '{"x": 1}'], 2, "expected a JSON array"),
        (["submit", "tests.add", "--args", "[1, 2]", "--queue", "nope"], 1, "unknown queue 'nope'"),
        (["submit", "tests.add", "--args", "[1, 2]", "--priority", "11"], 1, "priority=11: expected a priority 0-9"),
        (["routes", "explain", "tests.nope"], 1, "unknown task"),
    ],
)
def test_errors_are_one_line_never_a_traceback(cli, args, code, text):
    out = cli(*args)
    assert out.exit_code == code, out.output
    assert text in out.output
    assert "Traceback" not in out.output
    if code == 1:
        assert len(out.output.strip().splitlines()) == 1


def test_routes_and_explain(cli):
    table = cli("routes").output
    assert "tests.add" in table and "taskkit.science.simulate" in table
    out = cli("routes", "explain", "tests.flaky", "--json")
    d = json.loads(out.output)
    assert d["queue"] == "default" and d["retry"]["on"] == ["ValueError"] and d["decided_by"]["queue"] == "default queue"


def test_config_show_masks_secrets(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("TASKKIT_BROKER_URL", "redis://:hunter2@10.0.0.5:6379/0")
    out = cli("config", "show")
    assert out.exit_code == 0 and "hunter2" not in out.output and "redis://:***@10.0.0.5:6379/0" in out.output
    monkeypatch.setenv("TASKKIT_LIMITS_TIME_LIMIT", "-1")
    out = cli("config", "show")
    assert out.exit_code == 1 and "limits.time_limit" in out.output


def test_unreachable_redis_is_one_line(cli, monkeypatch):
    monkeypatch.setenv("TASKKIT_BROKER_URL", "redis://:hunter2@127.0.0.1:1/0")
    out = cli("submit", "tests.add", "--args", "[1, 2]")
    assert out.exit_code == 1 and "cannot reach Redis at redis://:***@127.0.0.1:1/0" in out.output
    assert "hunter2" not in out.output and len(out.output.strip().splitlines()) == 1
