"""`taskkit dev up|status|down`: a real redis-server, worker and beat, and nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from taskkit.cli import main
from taskkit.devstack import _group_members

from .conftest import ROOT, free_port, wait_until


def leftovers(state: dict) -> list[int]:
    """Processes still alive in any of the stack's process groups (pool children included)."""
    return [pid for p in state["procs"] for pid in _group_members(p["pid"])]


def dev(runner: CliRunner, directory: Path, port: int, *args: str):
    return runner.invoke(main, ["dev", *args, "--dir", str(directory), "--port", str(port)], catch_exceptions=False)


def test_up_status_second_up_refused_down_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # defaults, not the repo's taskkit.toml
    runner, directory, port = CliRunner(), tmp_path / "dev", free_port()
    up = dev(runner, directory, port, "up", "--detach")
    assert up.exit_code == 0, up.output
    state = json.loads((directory / "stack.json").read_text())
    assert [p["name"] for p in state["procs"]] == ["redis", "worker", "beat", "supervisor"]
    assert len(leftovers(state)) >= 5  # redis, worker + its pool, beat, supervisor

    status = dev(runner, directory, port, "status", "--json")
    info = json.loads(status.output)
    assert info["running"] and info["redis_answers"] and all(p["alive"] for p in info["processes"].values())
    wait_until(lambda: "Acquired lock" in (directory / "logs" / "beat.log").read_text(), 20, "beat to start (redbeat lock)")

    # a password of its own: kept 0600 in the directory, on no command line, used without typing it
    password_file = directory / "redis.password"
    password = password_file.read_text().strip()
    assert len(password) >= 24 and password_file.stat().st_mode & 0o777 == 0o600
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port).ping()
    for pid in leftovers(state):
        assert password not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    env = {"TASKKIT_DEV_DIR": str(directory), "TASKKIT_DEV_PORT": str(port)}
    sent = runner.invoke(main, ["submit", "taskkit.ops.health", "--wait", "--json"], env=env)
    assert sent.exit_code == 0 and json.loads(sent.output)["state"] == "SUCCESS", sent.output
    assert password not in sent.output + up.output

    again = dev(runner, directory, port, "up", "--detach")
    assert again.exit_code == 1 and "already running" in again.output
    assert len(again.output.strip().splitlines()) == 1

    down = dev(runner, directory, port, "down")
    assert down.exit_code == 0 and "redis" in down.output
    assert leftovers(state) == []
    assert not (directory / "stack.json").exists()
    assert json.loads(dev(runner, directory, port, "status", "--json").output)["running"] is False


def test_ctrl_c_stops_everything(tmp_path):
    directory, port = tmp_path / "dev", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKKIT_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskkit.cli", "dev", "up", "--dir", str(directory), "--port", str(port)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        state_file = directory / "stack.json"
        wait_until(lambda: state_file.exists() and len(json.loads(state_file.read_text())["procs"]) == 4, 30, "stack to start")
        state = json.loads(state_file.read_text())
        wait_until(lambda: "Press Ctrl-C" in (proc.stdout.readline() or ""), 30, "stack to be ready", interval=0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "dev stack stopped" in out
    assert leftovers(state) == []


def test_missing_redis_server_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server here
    result = CliRunner().invoke(main, ["dev", "up", "--dir", str(tmp_path / "dev"), "--port", str(free_port())])
    assert result.exit_code == 1
    assert "redis-server is not on PATH" in result.output and "apt-get install redis-server" in result.output


def test_a_dead_worker_beat_or_redis_is_started_again_with_backoff(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner, directory, port = CliRunner(), tmp_path / "dev", free_port()
    assert dev(runner, directory, port, "up", "--detach").exit_code == 0
    env = {"TASKKIT_DEV_DIR": str(directory), "TASKKIT_DEV_PORT": str(port)}
    try:

        def procs() -> dict:
            return json.loads(dev(runner, directory, port, "status", "--json").output)["processes"]

        killed = []
        for name, expected in (("worker", 1), ("beat", 1), ("redis", 1), ("worker", 2)):
            killed.append(procs()[name]["pid"])
            os.kill(killed[-1], signal.SIGKILL)
            wait_until(
                lambda name=name, n=expected: procs()[name]["restarts"] == n and procs()[name]["alive"], 30, f"{name} restart {expected}"
            )
        shown = dev(runner, directory, port, "status").output
        assert "restarts" in shown.splitlines()[1]
        log = (directory / "logs" / "supervisor.log").read_text()
        assert "worker (pid" in log and "starting it again in 1s" in log
        assert "starting it again in 2s" in log  # the worker died twice within STABLE_AFTER: the delay doubled
        sent = runner.invoke(main, ["submit", "taskkit.ops.health", "--wait", "--json"], env=env)
        assert sent.exit_code == 0 and json.loads(sent.output)["state"] == "SUCCESS", sent.output
        assert [pid for group in killed for pid in _group_members(group)] == []  # no orphaned pool children
    finally:
        state = json.loads((directory / "stack.json").read_text())
        dev(runner, directory, port, "down")
    assert leftovers(state) == []
