"""The notebooks under nbval and the runbooks under papermill, against a real stack (Redis, a worker, beat).

nbval runs in a child pytest so its kernels start with the stack's environment (taskkit.toml
and the broker URL), exactly as `taskkit lab` gives them; the runbooks run through
`taskkit runbook run`'s own code path, and the executed records are kept in tmp_path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

import taskkit
from taskkit import deadletters as dlq
from taskkit import runbooks

from .conftest import ROOT, Stack, wait_until

NOTEBOOKS = ROOT / "notebooks"
W = "nb"


@pytest.fixture(scope="module")
def stack(redis_port, tmp_path_factory):
    s = Stack(redis_port, tmp_path_factory.mktemp("notebooks"), "[beat]\nmax_interval = 1\nlock_timeout = 5\n")
    s.start_worker(W, concurrency=2)
    s.start_beat()
    yield s
    s.stop()


@pytest.fixture
def kernel_env(stack, monkeypatch):
    """Kernels are child processes: they read the stack's settings from the environment."""
    for key in ("TASKKIT_CONFIG", "TASKKIT_BROKER_URL", "PYTHONPATH"):
        monkeypatch.setenv(key, stack.env[key])
    return stack


def outputs(path: Path) -> str:
    """Every text output of an executed notebook, joined."""
    book = nbformat.read(path, as_version=4)
    parts = []
    for cell in book.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or "".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_every_notebook_passes_nbval(stack):
    books = sorted(str(p) for p in NOTEBOOKS.glob("*.ipynb"))
    assert len(books) == 5
    argv = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with", str(NOTEBOOKS / "sanitize.cfg")]
    out = subprocess.run(
        [*argv, "-p", "no:cacheprovider", "-q", *books], env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout.splitlines()[-1]


def test_every_notebook_opens_with_a_paragraph_on_what_it_is_for():
    for path in [*NOTEBOOKS.glob("*.ipynb"), *NOTEBOOKS.glob("runbooks/*.ipynb")]:
        first = nbformat.read(path, as_version=4).cells[0]
        assert first.cell_type == "markdown" and first.source.startswith("# ") and len(first.source.split()) > 30, path.name


def _dead_letters(stack, n: int, key: str) -> list[str]:
    ids = [taskkit.submit("tests.fails_until", args=[f"{key}-{i}"], app=stack.app).id for i in range(n)]
    for task_id in ids:
        wait_until(lambda t=task_id: _is_dead(stack, t), 15, f"dead letter {task_id}")
    return ids


def _is_dead(stack, task_id):
    try:
        return dlq.get(task_id, app=stack.app)
    except taskkit.UnknownDeadLetter:
        return None


def test_dead_letters_runbook_dry_run_then_replay(kernel_env, tmp_path):
    stack = kernel_env
    key = f"rb-{time.time()}"
    ids = _dead_letters(stack, 3, key)
    dry = runbooks.run("dead-letters", {"task": "tests.fails_until"}, records=tmp_path)  # dry_run defaults to True
    assert dry.is_file() and dry.parent.parent == tmp_path  # the record: records/YYYY-MM-DD/NAME-HHMMSS.ipynb
    text = outputs(dry)
    assert all(f"would replay {i}" in text for i in ids)
    assert not any(dlq.get(i, app=stack.app)["replayed"] for i in ids)  # a dry run changes nothing

    for i in range(3):
        stack.redis.set(f"{key}-{i}:fixed", 1)  # the cause is fixed: now the replays succeed
    done = runbooks.run("dead-letters", {"task": "tests.fails_until", "dry_run": False}, records=tmp_path)
    assert "replays finished: {'SUCCESS': 3}" in outputs(done)
    assert all(dlq.get(i, app=stack.app)["replayed"] for i in ids)
    again = runbooks.run("dead-letters", {"task": "tests.fails_until", "dry_run": False}, records=tmp_path)
    assert "0 dead letter(s) to replay" in outputs(again)  # replayed once: a second run skips them


def test_queue_backlog_runbook_diagnoses_then_grows_the_pool(kernel_env, tmp_path):
    stack = kernel_env
    host = next(w for w in taskkit.workers(app=stack.app)["replies"] if w.startswith(f"{W}@"))
    taskkit.pause("low", destination=[host], app=stack.app)
    try:
        for _ in range(4):
            taskkit.submit("tests.sleeps", args=[0], queue="low", app=stack.app)
        wait_until(lambda: taskkit.queue_depths(app=stack.app)["low"] == 4, 10, "a backlog of 4 in low")
        dry = outputs(runbooks.run("queue-backlog", {"queue": "low"}, records=tmp_path))
        assert "low: 4 waiting {8: 4}" in dry and "consumers: NONE" in dry and "would grow the pool of no consumer" in dry
    finally:
        taskkit.resume("low", destination=[host], app=stack.app)
    before = taskkit.workers(app=stack.app)["replies"][host]["pool"]
    grown = outputs(runbooks.run("queue-backlog", {"queue": "low", "action": "grow", "dry_run": False}, records=tmp_path))
    assert "'ok': 'pool will grow'" in grown
    wait_until(lambda: taskkit.workers(app=stack.app)["replies"][host]["pool"] == before + 1, 15, "the pool to grow by one")
    taskkit.pool_shrink(1, destination=[host], app=stack.app)


def test_runbook_cli_prints_the_record_and_refuses_unknown_parameters(kernel_env, tmp_path):
    from click.testing import CliRunner

    from taskkit.cli import main

    runner = CliRunner()
    config = ["--config", kernel_env.env["TASKKIT_CONFIG"]]
    ok = runner.invoke(main, [*config, "runbook", "run", "queue-backlog", "-p", "queue", "high", "--records", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    record = Path(ok.output.strip().splitlines()[-1])
    assert record.is_file() and "would grow the pool" in outputs(record)
    params = json.loads(json.dumps(nbformat.read(record, as_version=4).metadata["papermill"]["parameters"]))
    assert params == {"queue": "high"}
    bad = runner.invoke(main, [*config, "runbook", "run", "queue-backlog", "-p", "queu", "high"])
    assert bad.exit_code == 1 and "queu='high': a parameter of runbook queue-backlog (queue, action" in bad.output
    failed = runner.invoke(main, [*config, "runbook", "run", "queue-backlog", "-p", "queue", "nope", "--records", str(tmp_path)])
    assert failed.exit_code == 1 and "failed: cell" in failed.output and "UnknownQueue: unknown queue 'nope'" in failed.output
    kept = Path(failed.output.split("(record: ")[1].split(")")[0])
    assert kept.is_file() and kept != record  # the record of the failed run, next to the first (never overwriting it)
    missing = runner.invoke(main, [*config, "runbook", "run", "nope"])
    assert missing.exit_code == 1 and "no runbook 'nope'" in missing.output and "dead-letters, queue-backlog" in missing.output
