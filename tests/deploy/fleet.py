"""A fleet for the deploy tests: a booted testbed plus what a test generates for it (an
encrypted vault of random passwords, the variables, the team's task package), and the
playbook runner that checks a run's recap. Used by test_playbooks.py and test_ha.py."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # testbed.py is a script, not a package
from testbed import Testbed

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = ROOT / "playbooks"
BIN = Path(sys.executable).parent  # the venv's ansible-playbook, ansible-vault, taskkit
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
# vault variable -> key of Fleet.passwords
VAULT = {
    "vault_redis_app_password": "app",
    "vault_redis_monitor_password": "monitor",
    "vault_flower_password": "flower",
    "vault_metrics_token": "metrics",
}

TEAM_TASKS = '''
"""The team's own tasks: installed on the hosts from the wheelhouse, like any task package."""

import socket
import time

from celery import shared_task

from . import VERSION


@shared_task(name="tkteam.where")
def where() -> dict:
    return {"host": socket.gethostname(), "version": VERSION}


@shared_task(name="tkteam.slow")
def slow(seconds: float) -> dict:
    time.sleep(seconds)
    return {"slept": seconds, "host": socket.gethostname(), "version": VERSION}
'''


def needs_tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in {BIN}; pip install -e '.[test]'")
    return str(path)


def changed(recap: dict) -> dict[str, int]:
    return {h: r[1] for h, r in recap.items()}


class Fleet:
    """The testbed plus what the test generated: vault, variables, the team's package.

    vault: more vault variables (name -> key of self.passwords), each a fresh random password.
    """

    def __init__(self, tb: Testbed, tmp: Path, variables: str, *, vault: Mapping[str, str] | None = None) -> None:
        self.tb, self.tmp = tb, tmp
        self.playbook_runs = itertools.count()  # numbers the playbook logs
        self.vault_vars = {**VAULT, **(vault or {})}
        self.passwords = {key: secrets.token_hex(16) for key in self.vault_vars.values()}
        self.team = tmp / "tkteam"
        self.write_team_package("0.1.0")
        self.vault_password = tmp / "vault-password"
        self.vault_password.write_text(secrets.token_hex(24) + "\n")
        self.vault_password.chmod(0o600)
        self.vault = tmp / "vault.yml"
        self.vault.write_text("".join(f"{name}: {self.passwords[key]}\n" for name, key in self.vault_vars.items()))
        subprocess.run(
            [str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(self.vault_password), str(self.vault)], check=True
        )
        assert self.vault.read_text().startswith("$ANSIBLE_VAULT;")
        self.vars = tmp / "test-vars.yml"
        self.vars.write_text(f'taskkit_packages: ["{self.team}"]\ntaskkit_wheelhouse_cache: "{tmp / "wheelhouse"}"\n' + variables)

    def write_team_package(self, version: str) -> None:
        pkg = self.team / "tkteam"
        pkg.mkdir(parents=True, exist_ok=True)
        (self.team / "pyproject.toml").write_text(
            f'[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "tkteam"\nversion = "{version}"\ndependencies = ["celery>=5.4"]\n'
        )
        (pkg / "__init__.py").write_text(f'VERSION = "{version}"\n')
        (pkg / "tasks.py").write_text(TEAM_TASKS)

    def playbook(self, name: str, *extra: str, timeout: float = 900) -> tuple[str, dict[str, tuple[int, ...]]]:
        """Run a playbook inside the lab; return its output and the recap (ok, changed, unreachable, failed)."""
        argv = [str(BIN / "ansible-playbook"), "-i", str(self.tb.inventory_path), str(PLAYBOOKS / name)]
        argv += ["-e", f"@{self.vault}", "-e", f"@{self.vars}", "--vault-password-file", str(self.vault_password), *extra]
        env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_PIPELINING": "1",
            "ANSIBLE_FORKS": "10",
            "ANSIBLE_GATHERING": "smart",  # facts once per host and run, not once per play
            "ANSIBLE_HOME": str(self.tmp / "ansible"),
            "ANSIBLE_LOCAL_TEMP": str(self.tmp / "ansible/tmp"),
        }
        t0 = time.monotonic()
        p = self.tb.run_in_lab(argv, capture_output=True, env=env, timeout=timeout)
        seconds = time.monotonic() - t0
        (self.tmp / f"{name}-{next(self.playbook_runs)}.log").write_text(p.stdout + p.stderr)
        recap = {m[1]: tuple(int(x) for x in m.groups()[1:]) for m in RECAP.finditer(p.stdout)}
        assert p.returncode == 0, f"{name} exited {p.returncode} after {seconds:.0f}s:\n{(p.stdout + p.stderr)[-6000:]}"
        assert recap and set(recap) <= set(self.tb.hosts), recap  # deploy.yml leaves the Redis host alone
        assert all(r[2] == 0 and r[3] == 0 for r in recap.values()), recap
        return p.stdout, recap

    def taskkit(self, *args: str, timeout: float = 120, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        """The controller's `taskkit`, inside the lab, with the hosts' config (controller.toml)."""
        env = {
            **os.environ,
            "TASKKIT_CONFIG": str(self.tmp / "controller.toml"),
            "TASKKIT_BROKER_PASSWORD": self.passwords["app"],
            "PYTHONPATH": str(self.team),
            **(env or {}),
        }
        return self.tb.run_in_lab([str(BIN / "taskkit"), *args], capture_output=True, env=env, timeout=timeout)
