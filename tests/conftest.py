"""Real parts for every test: one redis-server for the run, real worker processes.

Each test that needs isolation gets its own Redis database and its own taskkit.toml, and
the workers it starts read that file, exactly as deployed workers do.
"""

from __future__ import annotations

import gc
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import taskkit
from taskkit.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
REDIS_DATABASES = 256
_db_numbers = itertools.count(1)  # 0 is left alone


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long-faults", action="store_true", help="run the fault suite's full loops (CI runs short ones)")


@pytest.fixture(scope="session")
def repetitions(request: pytest.FixtureRequest) -> Any:
    """repetitions(short, long) → how many times a fault loop runs: long with --long-faults."""
    full = request.config.getoption("--long-faults")
    return lambda short, long: long if full else short


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def taskkit_cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    """The `taskkit` command as its own process, with `env` as its only TASKKIT_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKKIT_")}
    return subprocess.run(
        [str(Path(sys.executable).parent / "taskkit"), *argv], env={**clean, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def wait_until(probe: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    server = shutil.which("redis-server")
    assert server, "redis-server is needed for the tests: apt-get install redis-server"
    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--databases",
            str(REDIS_DATABASES),
            "--dir",
            str(data),
            "--logfile",
            str(data / "redis.log"),
        ],
    )
    client = redis.Redis(port=port)
    wait_until(lambda: pings(client), 10, "redis-server")
    yield port
    gc.collect()  # results still referenced unsubscribe now, while Redis is up (else noise at exit)
    proc.terminate()
    proc.wait(10)


def pings(client: redis.Redis) -> bool:
    """True once Redis answers a PING (for waiting on a redis-server the test started)."""
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


class Stack:
    """One isolated deployment: a Redis database, a taskkit.toml, an app, its workers and beats."""

    def __init__(
        self, port: int, directory: Path, config: str, *, password: str | None = None, given: dict[str, str] | None = None
    ) -> None:
        """given: the TASKKIT_* environment of another Redis (tests/sentinels.py's fleet) instead of a database of `port`."""
        self.db = next(_db_numbers)
        assert self.db < REDIS_DATABASES
        self.url = f"redis://127.0.0.1:{port}/{self.db}"
        self.dir = directory
        self.config_path = directory / "taskkit.toml"
        self.config_path.write_text(f'imports = ["tests.tasks"]\n{config}')
        # the URL (and a password) come from the environment, as a deploy's env file gives them
        given = given or {"TASKKIT_BROKER_URL": self.url, **({"TASKKIT_BROKER_PASSWORD": password} if password else {})}
        notes = {"TESTS_NOTES_URL": f"redis://127.0.0.1:{port}/0"}  # tests.note's store, apart from the broker
        self.env = {**os.environ, "TASKKIT_CONFIG": str(self.config_path), "PYTHONPATH": str(ROOT), **notes, **given}
        self.settings = load_settings(self.config_path, env=given)
        self.app = taskkit.create_app(self.settings)
        self.redis = redis.Redis.from_url(self.url, password=password)
        self.workers: list[subprocess.Popen] = []
        self.beats: list[subprocess.Popen] = []

    def start_worker(self, name: str, *, queues: str | None = None, concurrency: int = 2, wait: bool = True) -> subprocess.Popen:
        log = self.dir / f"{name}.log"
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "taskkit.app",
            "worker",
            "-n",
            f"{name}@%h",
            "-c",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--logfile",
            str(log),
            "-Q",
            queues or ",".join(self.settings.queues),
        ]
        proc = self._spawn(name, argv)
        self.workers.append(proc)
        if wait:
            hostname = f"{name}@{socket.gethostname()}"
            wait_until(lambda: self.app.control.ping(destination=[hostname], timeout=0.3), 30, f"worker {name}")
        return proc

    def start_beat(self, name: str = "beat", *, wait: bool = True) -> subprocess.Popen:
        """A real `celery -A taskkit.app beat`; with wait, until it holds the lock (is the active beat)."""
        log = self.dir / f"{name}.log"
        argv = [sys.executable, "-m", "celery", "-A", "taskkit.app", "beat", "--loglevel", "INFO", "--logfile", str(log)]
        proc = self._spawn(name, argv)
        self.beats.append(proc)
        if wait:
            wait_until(lambda: log.is_file() and "beat: Acquired lock" in log.read_text(), 30, f"beat {name} to take the lock")
        return proc

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        # own session: stop() signals the whole group (the pool too); output kept for a failing test
        with open(self.dir / f"{name}.out", "wb") as out:
            return subprocess.Popen(argv, env=self.env, cwd=ROOT, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        # results still referenced in cycles unsubscribe now, while this stack's Redis is up: collected
        # later (after a fleet is gone) each retries its dead Redis and stalls whichever test runs then
        gc.collect()
        procs = [*self.beats, *self.workers]  # beats first: nothing new is sent while workers stop
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the pool children too
            except ProcessLookupError:
                pass
        self.app.close()


@pytest.fixture
def make_stack(redis_port: int, tmp_path: Path) -> Iterator[Any]:
    """make_stack(config_toml="") → a fresh Stack; all its workers and beats stop at teardown."""
    stacks: list[Stack] = []

    def make(config: str = "") -> Stack:
        directory = tmp_path / f"stack{len(stacks)}"
        directory.mkdir()
        stacks.append(Stack(redis_port, directory, config))
        return stacks[-1]

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="module")
def shared_stack(redis_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack with one worker on every queue, shared by a test module's quick tests."""
    stack = Stack(redis_port, tmp_path_factory.mktemp("shared"), SHARED_CONFIG)
    stack.start_worker("shared")
    yield stack
    stack.stop()


SHARED_CONFIG = """
[retry]
backoff = 0.2
backoff_max = 5
jitter = false
"""
