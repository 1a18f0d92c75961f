"""No secret in any message: a password fed through every config path never shows in an error,
a repr, a log line or CLI output, against a real Redis that requires it."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

import taskkit
from taskkit.cli import main
from taskkit.config import load_settings

from .conftest import REDIS_DATABASES, Stack, free_port, pings, wait_until

SECRET = "hunter2-Zq9"


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory):
    """A redis-server of its own that requires SECRET."""
    port, data = free_port(), tmp_path_factory.mktemp("locked")
    conf = data / "redis.conf"
    conf.write_text(f'requirepass "{SECRET}"\n')
    proc = subprocess.Popen([shutil.which("redis-server"), str(conf), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(data),
                             "--databases", str(REDIS_DATABASES)],
                            stdout=subprocess.DEVNULL)  # fmt: skip
    client = redis.Redis(port=port, password=SECRET)
    wait_until(lambda: pings(client), 10, "the locked redis-server")
    yield port
    proc.terminate()
    proc.wait(10)


PATHS = {  # every way a password reaches taskkit's settings
    "url in the file": lambda port, tmp: ({}, f"[broker]\nurl = 'redis://:{SECRET}@127.0.0.1:{port}/0'\n"),
    "url in the environment": lambda port, tmp: ({"TASKKIT_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:{port}/0"}, ""),
    "password in the environment": lambda port, tmp: (
        {"TASKKIT_BROKER_URL": f"redis://127.0.0.1:{port}/0", "TASKKIT_BROKER_PASSWORD": SECRET}, ""),
    "result url in the environment": lambda port, tmp: (
        {"TASKKIT_BROKER_URL": f"redis://127.0.0.1:{port}/0", "TASKKIT_BROKER_PASSWORD": SECRET,
         "TASKKIT_BROKER_RESULT_URL": f"redis://:{SECRET}@127.0.0.1:{port}/1"}, ""),
}  # fmt: skip


@pytest.mark.parametrize("path", PATHS)
def test_the_password_shows_nowhere(locked_redis, tmp_path, path, caplog):
    env, toml = PATHS[path](locked_redis, tmp_path)
    config = tmp_path / "taskkit.toml"
    config.write_text('imports = ["tests.tasks"]\n' + toml)
    settings = load_settings(config, env=env)
    app = taskkit.create_app(settings)
    seen = [repr(settings), repr(settings.broker), str(settings.public()), repr(app.settings)]
    res = taskkit.submit("tests.add", args=[1, 2], app=app)  # works: the password is used
    seen.append(repr(res))
    runner = CliRunner()
    for args in (["config", "show"], ["config", "show", "--json"], ["queues", "--no-consumers"], ["peek", "default"],
                 ["dlq", "list"], ["history", "--since", "1h"], ["routes"], ["submit", "tests.nope"]):  # fmt: skip
        out = runner.invoke(main, ["--config", str(config), *args], env=env)
        seen.append(out.output)
    # a wrong password (the right port), and the right one on a port nobody listens on: one masked line each
    other = "wrong-" + SECRET[::-1]
    port = str(locked_redis)
    for bad_env, bad_toml, reason in (
        ({k: v.replace(SECRET, other) for k, v in env.items()}, toml.replace(SECRET, other), "invalid username-password"),
        ({k: v.replace(port, str(free_port())) for k, v in env.items()}, toml.replace(port, str(free_port())), "refused"),
    ):
        (tmp_path / "bad.toml").write_text('imports = ["tests.tasks"]\n' + bad_toml)
        out = runner.invoke(main, ["--config", str(tmp_path / "bad.toml"), "queues", "--no-consumers"], env=bad_env)
        assert out.exit_code == 1 and "cannot reach Redis" in out.output and reason in out.output, out.output
        assert other not in out.output and len(out.output.strip().splitlines()) == 1
        seen.append(out.output)
    seen += [r.getMessage() for r in caplog.records]
    leaked = [text for text in seen if SECRET in text]
    assert not leaked, leaked[0][:500]
    assert any(":***@" in text or "redis://127.0.0.1" in text for text in seen)


def test_a_worker_keeps_the_password_out_of_argv_logs_history_and_redis(locked_redis, tmp_path):
    stack = Stack(locked_redis, tmp_path, "", password=SECRET)
    app = stack.app
    worker = stack.start_worker("locked", concurrency=1)
    try:
        assert taskkit.submit("tests.add", args=[2, 2], app=app).get(timeout=20) == 4
        failing = taskkit.submit("tests.fails_with", args=["secret-test", "KeyError"], app=app)
        wait_until(lambda: failing.id in {e["id"] for e in taskkit.deadletters.entries(app=app)}, 20, "the dead letter")
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_text(errors="replace") for pid in _group(worker.pid)]
    finally:
        stack.stop()
    time.sleep(0.2)
    client = stack.redis
    values = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            values.append(client.get(key) or b"")
        elif kind == "hash":
            values += client.hvals(key)
        elif kind == "list":
            values += client.lrange(key, 0, -1)
        elif kind == "stream":
            values += [v for _, fields in client.xrange(key) for v in fields.values()]
    logs = [p.read_text(errors="replace") for p in tmp_path.glob("locked.*")]
    assert logs and cmdlines and values
    for text in [*cmdlines, *logs, *(v.decode(errors="replace") for v in values)]:
        assert SECRET not in text


def _group(pgid: int) -> list[int]:
    from taskkit.devstack import _group_members

    return _group_members(pgid)
