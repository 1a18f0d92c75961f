"""The local stack: a real redis-server, a worker on every queue and beat, as child processes.

Each process runs in its own session (process group), so `down` can stop it and every
process it forked, and Ctrl-C in the terminal reaches only `taskkit dev up`, which then
stops the stack in order. A state file records each process with its start time, so a
reused PID is never mistaken for ours. A supervisor process restarts Redis, the worker or
beat when one dies (with backoff, as systemd's `Restart=` does on the fleet) and counts the
restarts in the state file.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from .app import create_app
from .config import DEV_PASSWORD_FILE, Settings, dev_password, load_settings
from .errors import DevStackError

START_TIMEOUT = 30.0  # seconds for Redis and the worker to answer
LOCK_WAIT = 5.0  # seconds a command waits for another one (or the supervisor) to finish with the directory
RESTART_DELAY = 1.0  # first delay before a died process is started again; doubles per quick death
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 30.0  # a process that ran this long before dying starts over at RESTART_DELAY
STOP_TIMEOUT = 15.0  # seconds for a warm shutdown before SIGKILL
WORKER_NAME = "dev@%h"
INSTALL_HINT = "install it with `apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS)"


@dataclass
class Proc:
    name: str
    pid: int
    started: int  # /proc start time in clock ticks: identifies the process beyond its PID
    log: str
    restarts: int = 0  # times the supervisor started it again

    def alive(self) -> bool:
        return _start_time(self.pid) == self.started


@dataclass
class StackState:
    dir: str
    port: int
    url: str
    procs: list[Proc] = field(default_factory=list)


class DevStack:
    def __init__(self, settings: Settings, *, port: int | None = None, directory: str | None = None) -> None:
        self.settings = settings
        self.port = port or settings.dev.port
        self.dir = Path(directory or settings.dev.dir).resolve()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.state_file = self.dir / "stack.json"

    # ------------------------------------------------------------ state

    def state(self) -> StackState | None:
        try:
            raw = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return StackState(**{**raw, "procs": [Proc(**p) for p in raw["procs"]]})

    def running(self) -> StackState | None:
        state = self.state()
        return state if state and any(p.alive() for p in state.procs) else None

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "w") as fh:
            deadline = time.monotonic() + LOCK_WAIT
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise DevStackError(f"another `taskkit dev` command is busy with {self.dir}; wait for it") from None
                    time.sleep(0.05)
            yield

    # ------------------------------------------------------------ up

    def up(self) -> StackState:
        """Start Redis, a worker and beat; refuse if this stack already runs."""
        with self._lock():
            if state := self.running():
                raise DevStackError(
                    f"a dev stack is already running from {self.dir} ({state.url}); "
                    "see `taskkit dev status`, stop it with `taskkit dev down`"
                )
            if not shutil.which("redis-server"):
                raise DevStackError(f"redis-server is not on PATH; {INSTALL_HINT}")
            if _port_in_use(self.port):
                raise DevStackError(f"port {self.port} on 127.0.0.1 is in use; pick another with --port or [dev] port")
            (self.dir / "redis").mkdir(parents=True, exist_ok=True)
            (self.dir / "logs").mkdir(exist_ok=True)
            state = StackState(str(self.dir), self.port, self.url)
            try:
                state.procs.append(self._spawn("redis"))
                self._save(state)
                self._wait_for_redis(state)
                state.procs += [self._spawn("worker"), self._spawn("beat")]
                self._save(state)
                self._wait_for_worker(state)
                state.procs.append(self._spawn("supervisor"))  # last: a failed start is reported, not retried
                self._save(state)
            except BaseException:
                self._stop(state)
                raise
            return state

    def _password(self) -> str:
        """The stack's Redis password: made once, kept in the directory (0600), never on a command line."""
        path = self.dir / DEV_PASSWORD_FILE
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24))
        return dev_password(self.dir) or ""

    def _redis_config(self) -> str:
        """A config file (0600) for what must not show in `ps`: the password."""
        path = self.dir / "redis.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f'requirepass "{self._password()}"\n')
        return str(path)

    def _argv(self, name: str) -> list[str]:
        if name == "redis":
            return [shutil.which("redis-server") or "redis-server", *self._redis_args()]
        if name == "worker":
            s = self.settings
            return self._celery("worker", "-Q", ",".join(s.queues), "-n", WORKER_NAME, "-c", str(s.dev.concurrency))
        if name == "beat":
            return self._celery("beat")
        return [sys.executable, "-m", "taskkit.devstack", str(self.dir), str(self.port)]  # the supervisor

    def _redis_args(self) -> list[str]:
        return [
            self._redis_config(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--protected-mode",
            "yes",
            "--dir",
            str(self.dir / "redis"),
            "--logfile",
            self._log("redis"),
            "--daemonize",
            "no",
            "--save",
            "",
            # AOF keeps queued tasks and schedules across a restart of the stack.
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",  # an evicting broker loses tasks
        ]

    def _celery(self, command: str, *args: str) -> list[str]:
        level = self.settings.log.level
        return [sys.executable, "-m", "celery", "-A", "taskkit.app", command, "--loglevel", level, "--logfile", self._log(command), *args]

    def _log(self, name: str) -> str:
        return str(self.dir / "logs" / f"{name}.log")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)  # the password goes in the environment (readable by this user only), not argv
        env.update(TASKKIT_BROKER_URL=self.url, TASKKIT_BROKER_RESULT_URL=self.url, TASKKIT_BROKER_PASSWORD=self._password())
        if self.settings.source != "defaults":
            env["TASKKIT_CONFIG"] = os.path.abspath(self.settings.source)
        return env

    def _spawn(self, name: str, restarts: int = 0) -> Proc:
        # stdout/stderr go to the log too: a crash before logging is set up must be visible
        with open(self._log(name) + ".out", "ab") as out:
            p = subprocess.Popen(
                self._argv(name), env=self._env(), stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        return Proc(name, p.pid, _start_time(p.pid) or 0, self._log(name), restarts)

    def _save(self, state: StackState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_file)

    def _client(self, url: str) -> redis.Redis:
        return redis.Redis.from_url(url, password=dev_password(self.dir), socket_connect_timeout=1, socket_timeout=1)

    def _wait_for_redis(self, state: StackState) -> None:
        client = self._client(self.url)
        self._wait(state, "redis", lambda: client.ping())

    def _wait_for_worker(self, state: StackState) -> None:
        app = create_app(load_settings(None if self.settings.source == "defaults" else self.settings.source, env=self._env()))
        self._wait(state, "worker", lambda: app.control.ping(timeout=0.5) or None)

    def _wait(self, state: StackState, what: str, probe: Any) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            dead = [p for p in state.procs if not p.alive()]
            if dead:
                raise DevStackError(f"{dead[0].name} exited during start; see {dead[0].log}(.out)")
            try:
                if probe():
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.2)
        raise DevStackError(f"{what} did not answer within {START_TIMEOUT:g}s; see {self._log(what)}")

    # ------------------------------------------------------------ status, down

    def status(self) -> dict[str, Any]:
        state = self.state()
        if state is None:
            return {"running": False, "dir": str(self.dir)}
        procs = {p.name: {"pid": p.pid, "alive": p.alive(), "restarts": p.restarts, "log": p.log} for p in state.procs}
        try:
            self._client(state.url).ping()
            redis_ok = True
        except (redis.RedisError, OSError):
            redis_ok = False
        return {
            "running": any(p["alive"] for p in procs.values()),
            "dir": state.dir,
            "url": state.url,
            "redis_answers": redis_ok,
            "processes": procs,
        }

    def down(self) -> list[str]:
        """Stop every process of the stack; returns the names that were running."""
        with self._lock():
            state = self.state()
            if state is None:
                return []
            stopped = [p.name for p in state.procs if p.alive()]
            self._stop(state)
            return stopped

    def _stop(self, state: StackState) -> None:
        # The supervisor first (it would start the others again), then worker and beat (warm
        # shutdown: running tasks finish or are requeued), Redis last. Only processes verified
        # as ours (PID and start time) are signalled.
        ours = [p for p in state.procs if p.alive()]
        order = ("supervisor",), ("worker", "beat"), ("redis",)
        for group in ([p for p in ours if p.name in names] for names in order):
            for p in group:
                _signal(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while any(p.alive() for p in group) and time.monotonic() < deadline:
                time.sleep(0.1)
            for p in group:
                for pid in _group_members(p.pid):  # stragglers, the worker's pool children included
                    _signal(pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)

    def watch(self, poll: float = 0.5) -> Iterator[Proc]:
        """Yield each process the supervisor started again; end when the stack is down or unsupervised."""
        seen: dict[str, int] = {}
        while (state := self.state()) is not None:
            procs = {p.name: p for p in state.procs}
            if "supervisor" in procs and not procs["supervisor"].alive():
                yield procs["supervisor"]
                return
            for p in procs.values():
                if p.restarts > seen.setdefault(p.name, p.restarts):
                    seen[p.name] = p.restarts
                    yield p
            _reap()
            time.sleep(poll)

    # ------------------------------------------------------------ supervise

    def supervise(self, poll: float = 0.5) -> None:
        """Start Redis, the worker or beat again when one dies; run until the stack is down.

        The delay before a restart doubles from RESTART_DELAY to RESTART_DELAY_MAX while a
        process keeps dying within STABLE_AFTER of its start, as systemd's restart limits do.
        """
        began = {name: time.monotonic() for name in ("redis", "worker", "beat")}
        quick: dict[str, int] = {}
        due: dict[str, float] = {}
        while (state := self.state()) is not None:
            now = time.monotonic()
            for p in state.procs:
                if p.name == "supervisor" or p.alive():
                    continue
                if p.name not in due:
                    quick[p.name] = quick.get(p.name, 0) + 1 if now - began[p.name] < STABLE_AFTER else 1
                    due[p.name] = now + min(RESTART_DELAY_MAX, RESTART_DELAY * 2 ** (quick[p.name] - 1))
                    _say(f"{p.name} (pid {p.pid}) exited; starting it again in {due[p.name] - now:g}s (see {p.log})")
                elif now >= due[p.name] and self._restart(p.name):
                    del due[p.name]
                    began[p.name] = time.monotonic()
            _reap()
            time.sleep(poll)

    def _restart(self, name: str) -> bool:
        try:
            with self._lock():
                state = self.state()
                if state is None:  # `down` ran meanwhile
                    return False
                i, old = next((i, p) for i, p in enumerate(state.procs) if p.name == name)
                if old.alive():
                    return True
                for pid in _group_members(old.pid):  # what it left behind (a worker's pool children)
                    _signal(pid, signal.SIGKILL)
                state.procs[i] = new = self._spawn(name, old.restarts + 1)
                self._save(state)
        except DevStackError:  # another command holds the directory: next round
            return False
        _say(f"{name} started again (pid {new.pid}, restart {new.restarts})")
        return True


# ------------------------------------------------------------ /proc helpers


def _reap() -> None:
    """Collect children that exited (restarted processes are this process's children)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _say(line: str) -> None:
    print(time.strftime("%Y-%m-%d %H:%M:%S"), line, flush=True)


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":  # a zombie has finished
        return None
    return int(fields[19])


def _group_members(pgid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(entry.name))
    return out


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _supervise_main(argv: list[str]) -> None:
    """`python -m taskkit.devstack DIR PORT`: the stack's supervisor (`up` starts it)."""
    directory, port = argv
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    stack = DevStack(load_settings(), port=int(port), directory=directory)
    sys.stdout = open(stack._log("supervisor"), "a", buffering=1)  # open for the process's life
    stack.supervise()


if __name__ == "__main__":
    _supervise_main(sys.argv[1:])
