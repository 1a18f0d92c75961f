"""TLS to Redis: every client of a Redis that speaks only TLS and wants client certificates.

A redis-server with `port 0` and a tls-port, a CA and a certificate made with openssl
(tests/sentinels.py). The worker, beat, the CLI, a notebook under nbval, the metrics
exporter and Flower all run as their own processes on `rediss://` with broker.tls_* set;
then a sentinel fleet over TLS (Redis and sentinels both) runs a task; and the ways TLS
goes wrong each say so in one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import redis

import taskkit
from taskkit.config import load_settings

from .conftest import ROOT, Stack, free_port, taskkit_cli, wait_until
from .sentinels import RedisFleet, make_tls, tls_redis

BIN = Path(sys.executable).parent
CONFIG = """
[beat]
max_interval = 0.5
lock_timeout = 5

[schedules.tick]
task = "tests.mark"
args = ["{key}", "beat"]
every = 0.5
"""


def tls_env(url: str, tls: dict[str, str], **more: str) -> dict[str, str]:
    env = {"TASKKIT_BROKER_URL": url, "TASKKIT_BROKER_TLS_CA_FILE": tls["ca"]}
    env.update(TASKKIT_BROKER_TLS_CERT_FILE=tls["cert"], TASKKIT_BROKER_TLS_KEY_FILE=tls["key"], **more)
    return env


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_port(tls, tmp_path_factory):
    port, proc = tls_redis(tmp_path_factory.mktemp("tls-redis"), tls)
    yield port
    proc.terminate()
    proc.wait(10)


def get(url: str, token: str | None = None) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def serve(stack: Stack, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    with open(stack.dir / f"{name}.out", "wb") as out:
        proc = subprocess.Popen(argv, env={**stack.env, **env}, cwd=ROOT, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    stack.workers.append(proc)  # stopped with the stack
    return proc


def test_every_client_works_over_tls_with_a_client_certificate(tls, tls_port, redis_port, tmp_path):
    key = f"tls-{tmp_path.name}"
    stack = Stack(redis_port, tmp_path, CONFIG.format(key=key), given=tls_env(f"rediss://127.0.0.1:{tls_port}/3", tls))
    notes = redis.Redis(port=redis_port)
    try:
        stack.start_worker("tls")  # waits for its ping reply: the worker is connected
        stack.start_beat()  # waits until it holds the lock in Redis
        wait_until(lambda: notes.llen(key) >= 2, 20, "beat's schedule to run")

        cli = subprocess.run(
            [str(BIN / "taskkit"), "submit", "tests.add", "--args", "[2, 3]", "--wait", "--json"],
            env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["result"] == 5

        token = "tls-test-token"
        metrics_port = free_port()
        serve(
            stack,
            "exporter",
            [str(BIN / "taskkit"), "metrics", "serve", "--bind", f"127.0.0.1:{metrics_port}"],
            {"TASKKIT_METRICS_TOKEN": token},
        )
        scraped = wait_until(lambda: _try(get, f"http://127.0.0.1:{metrics_port}/metrics", token), 20, "the exporter")
        assert "taskkit_redis_up 1.0" in scraped and 'taskkit_queue_waiting_messages{queue="default"}' in scraped

        flower_port = free_port()
        argv = [sys.executable, "-m", "celery", "-A", "taskkit.app", "flower", f"--port={flower_port}", "--address=127.0.0.1"]
        serve(stack, "flower", argv, {"FLOWER_UNAUTHENTICATED_API": "true"})
        base = f"http://127.0.0.1:{flower_port}"
        workers = wait_until(lambda: _try(get, f"{base}/api/workers?refresh=1"), 30, "Flower")
        assert any(name.startswith("tls@") for name in json.loads(workers))
        queues = json.loads(get(f"{base}/api/queues/length"))  # Flower's own Redis client (its broker page)
        assert "default" in {q["name"] for q in queues["active_queues"]}

        notebook = ROOT / "notebooks" / "00-quickstart.ipynb"
        argv = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-q", str(notebook)]
        nb = subprocess.run(argv, env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert nb.returncode == 0, nb.stdout[-4000:]
    finally:
        stack.stop()


def _try(fn, *args):
    try:
        return fn(*args)
    except OSError:
        return None


def test_sentinels_and_redis_over_tls(tls, tmp_path, redis_port):
    with RedisFleet(tmp_path / "fleet", tls=tls, password="tls-fleet", sentinel_password="tls-sentinel") as fleet:
        stack = Stack(redis_port, tmp_path, "", given=fleet.settings_env())
        try:
            stack.start_worker("tls-ha")
            assert taskkit.submit("tests.add", args=[20, 22], app=stack.app).get(timeout=20) == 42
            assert taskkit.redis_info(app=stack.app)["role"] == "master"
        finally:
            stack.stop()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"TASKKIT_BROKER_TLS_CERT_FILE": None, "TASKKIT_BROKER_TLS_KEY_FILE": None}, "cannot reach Redis at rediss://"),
        ({"TASKKIT_BROKER_TLS_CA_FILE": "other-ca"}, "certificate verify failed"),
        ({"TASKKIT_BROKER_URL": "redis://127.0.0.1:{port}/3"}, "empty unless TLS is on"),
        ({"TASKKIT_BROKER_TLS_CA_FILE": "/nonexistent/ca.crt"}, "a PEM file this user can read"),
    ],
    ids=["no-client-certificate", "wrong-ca", "tls-files-without-rediss", "missing-ca-file"],
)
def test_tls_mistakes_fail_in_one_line_before_anything_is_queued(tls, tls_port, tmp_path, change, says):
    env = tls_env(f"rediss://127.0.0.1:{tls_port}/3", tls)
    if change.get("TASKKIT_BROKER_TLS_CA_FILE") == "other-ca":
        change = {"TASKKIT_BROKER_TLS_CA_FILE": make_tls(tmp_path / "other")["ca"]}
    for name, value in change.items():
        if value is None:
            env.pop(name)
        else:
            env[name] = value.format(port=tls_port)
    before = _waiting(tls, tls_port)
    out = taskkit_cli({**env, "TASKKIT_CONFIG": str(_config(tmp_path))}, "submit", "tests.add", "--args", "[1, 2]")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert _waiting(tls, tls_port) == before  # nothing queued


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "taskkit.toml"
    path.write_text('imports = ["tests.tasks"]\n')
    return path


def _waiting(tls: dict[str, str], port: int) -> int:
    settings = load_settings(env=tls_env(f"rediss://127.0.0.1:{port}/3", tls))
    app = taskkit.create_app(settings)
    return sum(taskkit.queue_depths(app=app).values())
