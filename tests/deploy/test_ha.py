"""High availability and TLS on three booted Debian 12 hosts: a Redis primary and a replica,
three sentinels, TLS between every part; converge, idempotence, check mode, replication, then
the primary's Redis stops and the fleet keeps running tasks and beat, and a playbook run after
the failover changes nothing and demotes nobody.

    tk1: redis (initial primary), sentinel
    tk2: redis (replica), sentinel, workers
    tk3: sentinel, workers, beat, flower

(Monitoring is left out to keep CI time down: test_playbooks.py covers it.) Idempotence and
check mode are checked after the failover and the old primary's return, where they are
hardest to keep: Redis and Sentinel have rewritten their files by then. The hosts build from
a copy of the package taken when the module starts, so an edit meanwhile makes no new release.

One testbed for the module; the tests run in file order and build on each other (the last
one tears the testbed down).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # testbed.py is a script, not a package
from fleet import ROOT, Fleet, changed, needs_tool
from testbed import Testbed, leftovers, log, step

pytestmark = pytest.mark.deploy

GROUPS = {
    "redis": ["tk1", "tk2"],
    "sentinel": ["tk1", "tk2", "tk3"],
    "workers": ["tk2", "tk3"],
    "beat": ["tk3"],
    "flower": ["tk3"],
}
VAULT = {
    "vault_redis_replication_password": "replication",
    "vault_redis_sentinel_password": "sentinel-user",
    "vault_sentinel_password": "sentinel",
}
# TASKKIT_HA_TLS=0 runs the same fleet without TLS (by hand; CI runs it with TLS).
TLS = os.environ.get("TASKKIT_HA_TLS", "1") != "0"
REDIS_PORT, SENTINEL_PORT = (6380, 26380) if TLS else (6379, 26379)
REDIS_TLS = "--tls --cacert /etc/redis/tls/ca.crt --cert /etc/redis/tls/server.crt --key /etc/redis/tls/server.key" if TLS else ""
SENTINEL_TLS = (
    "--tls --cacert /etc/redis/sentinel-tls/ca.crt --cert /etc/redis/sentinel-tls/server.crt --key /etc/redis/sentinel-tls/server.key"
)
SENTINEL_TLS = SENTINEL_TLS if TLS else ""
VARIABLES = textwrap.dedent(f"""\
    taskkit_imports: [tkteam.tasks]
    taskkit_limits: {{time_limit: 2m, soft_time_limit: 100s}}
    taskkit_schedules:
      beacon: {{task: taskkit.ops.health, every: 3s}}
    redis_tls: {str(TLS).lower()}
    worker_stop_timeout: 180
    worker_instances:
      - {{name: main, queues: [critical, high, default, low], concurrency: 2, pool: threads}}
    """)


class HAFleet(Fleet):
    def redis(self, host: str, cmd: str, *, at: str | None = None, user: str = "monitor", tls: str = REDIS_TLS) -> str:
        """redis-cli on host against the Redis at `at` (default: its own), as an ACL user; stdout + stderr."""
        key = {"monitor": "monitor", "taskkit": "app"}[user]
        auth = f"REDISCLI_AUTH={self.passwords[key]} " if user else ""
        argv = f"{auth}redis-cli --no-auth-warning {tls} -h {at or self.tb.hosts[host]} -p {REDIS_PORT} --user {user} {cmd}"
        p = self.tb.ssh(host, argv)
        return p.stdout + p.stderr

    def replication(self, host: str) -> dict[str, str]:
        out = self.redis(host, "info replication")
        return dict(line.split(":", 1) for line in out.splitlines() if ":" in line and not line.startswith("#"))

    def sentinel(self, host: str, cmd: str) -> str:
        """redis-cli against host's own sentinel, with the sentinels' password."""
        argv = (
            f"REDISCLI_AUTH={self.passwords['sentinel']} redis-cli --no-auth-warning {SENTINEL_TLS} -h 127.0.0.1 -p {SENTINEL_PORT} {cmd}"
        )
        p = self.tb.ssh(host, argv)
        return p.stdout + p.stderr

    def primary(self, host: str) -> str:
        return self.sentinel(host, "SENTINEL GET-MASTER-ADDR-BY-NAME taskkit").split("\n")[0].strip()

    def taskkit(self, *args: str, timeout: float = 120, env=None):
        return super().taskkit(*args, timeout=timeout, env={"TASKKIT_SENTINEL_PASSWORD": self.passwords["sentinel"], **(env or {})})

    def beacon_runs(self) -> int:
        p = self.taskkit("schedules", "show", "beacon", "--json")
        assert p.returncode == 0, p.stdout + p.stderr
        return json.loads(p.stdout).get("total_run_count") or 0


@pytest.fixture(scope="module")
def fleet(needs_testbed: None, tmp_path_factory: pytest.TempPathFactory):
    needs_tool("ansible-playbook")
    tmp = tmp_path_factory.mktemp("ha")
    src = tmp / "src"  # the package as it is now: the release id stays the same for the whole module
    shutil.copytree(ROOT / "taskkit", src / "taskkit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    with Testbed(hosts=3, groups=GROUPS, name=f"tkh{os.getpid() % 100000}") as tb:
        yield HAFleet(tb, tmp, VARIABLES + f'taskkit_source: "{src}"\n', vault=VAULT)


@pytest.fixture
def verify_step(fleet: HAFleet, request: pytest.FixtureRequest):
    """Each check of the fleet is a step of its own, named after its test."""
    with step("ha: verify " + request.node.name.removeprefix("test_").replace("_", " ")):
        yield


def test_check_mode_on_fresh_hosts_fails_nothing(fleet: HAFleet) -> None:
    # Ansible's apt module needs python3-apt in check mode; a Debian server has it, the testbed's minbase hosts not.
    with step("ha: python3-apt on the fresh hosts"):
        installs = [
            subprocess.Popen(fleet.tb.ssh_argv(h, "apt-get update -qq && apt-get install -y -qq python3-apt"), stdout=subprocess.DEVNULL)
            for h in fleet.tb.hosts
        ]
        assert [p.wait(timeout=300) for p in installs] == [0] * len(installs)
    # redis.yml (Redis, the sentinels, the certificates): the taskkit role's check mode needs a release on the host.
    with step("ha: check mode, fresh hosts"):
        _out, recap = fleet.playbook("redis.yml", "--check")
    assert all(n > 0 for n in changed(recap).values()), recap


def test_site_converges(fleet: HAFleet) -> None:
    with step("ha: converge"):
        _out, recap = fleet.playbook("site.yml")
    assert all(n > 0 for n in changed(recap).values()), recap
    # The controller's CLI: tk2's taskkit.toml with the CA and client certificate it was given.
    tls = fleet.tmp / "tls"
    tls.mkdir()
    for name in ("ca.crt", "client.crt", "client.key") if TLS else ():
        (tls / name).write_text(fleet.tb.ssh("tk2", f"cat /etc/taskkit/tls/{name}", check=True).stdout)
    (tls / "client.key").chmod(0o600)
    toml = fleet.tb.ssh("tk2", "cat /etc/taskkit/taskkit.toml", check=True).stdout
    (fleet.tmp / "controller.toml").write_text(toml.replace("/etc/taskkit/tls", str(tls)))


@pytest.mark.usefixtures("verify_step")
def test_the_replica_follows_the_primary(fleet: HAFleet) -> None:
    tk1 = fleet.tb.hosts["tk1"]
    assert fleet.replication("tk1")["role"] == "master"
    replica = fleet.replication("tk2")
    assert (replica["role"], replica["master_host"], replica["master_link_status"]) == ("slave", tk1, "up"), replica
    assert fleet.redis("tk1", "set tk-ha-probe 42", user="taskkit").strip() == "OK"
    deadline = time.monotonic() + 10
    while fleet.redis("tk2", "get tk-ha-probe", user="taskkit").strip() != "42":
        assert time.monotonic() < deadline, "the write did not reach the replica"
        time.sleep(0.2)
    assert "READONLY" in fleet.redis("tk2", "set tk-ha-probe 43", user="taskkit")
    # the replication and sentinel users can do their job only
    acl = fleet.tb.ssh("tk1", "cat /etc/redis/users.acl", check=True).stdout
    assert "user replica on" in acl and "+psync" in acl and "user sentinel on" in acl, acl
    assert fleet.passwords["replication"] not in acl and fleet.passwords["sentinel-user"] not in acl


@pytest.mark.usefixtures("verify_step")
def test_three_sentinels_agree_on_the_primary(fleet: HAFleet) -> None:
    tk1 = fleet.tb.hosts["tk1"]
    for host in ("tk1", "tk2", "tk3"):
        assert fleet.primary(host) == tk1, host
        assert fleet.sentinel(host, "SENTINEL CKQUORUM taskkit").startswith("OK 3 usable Sentinels"), host
        master = fleet.sentinel(host, "SENTINEL MASTER taskkit").split("\n")
        info = dict(zip(master[::2], master[1::2], strict=False))
        assert (info["quorum"], info["down-after-milliseconds"], info["num-slaves"], info["num-other-sentinels"]) == (
            "2",
            "5000",
            "1",
            "2",
        ), info
    p = fleet.tb.ssh("tk3", f"redis-cli {SENTINEL_TLS} -h 127.0.0.1 -p {SENTINEL_PORT} ping")
    assert "NOAUTH" in p.stdout + p.stderr
    sentinels = fleet.sentinel("tk3", "SENTINEL SENTINELS taskkit")
    assert {fleet.tb.hosts["tk1"], fleet.tb.hosts["tk2"]} <= set(sentinels.split()), sentinels  # the announced addresses


@pytest.mark.usefixtures("verify_step")
def test_tls_everywhere_and_no_plain_text_port(fleet: HAFleet) -> None:
    redis, sentinel = str(REDIS_PORT), str(SENTINEL_PORT)
    for host, ports in {"tk1": [redis, sentinel], "tk2": [redis, sentinel], "tk3": [sentinel]}.items():
        listening = fleet.tb.ssh(host, "ss -Htln", check=True).stdout
        local = {line.split()[3].rsplit(":", 1)[1] for line in listening.splitlines() if line.strip()}
        assert set(ports) <= local and not ({"6379", "26379", "6380", "26380"} - set(ports)) & local, (host, sorted(local))
    toml = fleet.tb.ssh("tk3", "cat /etc/taskkit/taskkit.toml", check=True).stdout
    tk3 = fleet.tb.hosts["tk3"]
    assert f'"url" = "sentinel://taskkit@{tk3}:{SENTINEL_PORT};' in toml, toml  # its own sentinel first
    assert '"master_name" = "taskkit"' in toml and ('"tls" = true' in toml) == TLS, toml
    assert fleet.passwords["sentinel"] not in toml and fleet.passwords["app"] not in toml
    env = fleet.tb.ssh("tk3", "cat /etc/taskkit/taskkit.env", check=True).stdout
    assert f"TASKKIT_SENTINEL_PASSWORD={fleet.passwords['sentinel']}" in env
    if not TLS:
        return
    tk1 = fleet.tb.hosts["tk1"]
    no_cert = fleet.redis("tk3", "ping", at=tk1, user="taskkit", tls="--tls --cacert /etc/taskkit/tls/ca.crt")
    assert "PONG" not in no_cert, no_cert  # tls-auth-clients: a client certificate is required
    with_cert = fleet.redis(
        "tk3",
        "ping",
        at=tk1,
        user="taskkit",
        tls="--tls --cacert /etc/taskkit/tls/ca.crt --cert /etc/taskkit/tls/client.crt --key /etc/taskkit/tls/client.key",
    )
    assert with_cert.strip() == "PONG", with_cert
    modes = fleet.tb.ssh("tk3", "stat -c '%n %a %U %G' /etc/taskkit/tls/*", check=True).stdout.split("\n")
    assert "/etc/taskkit/tls/client.key 640 root taskkit" in modes, modes


@pytest.mark.usefixtures("verify_step")
def test_task_from_controller_runs_through_the_sentinels(fleet: HAFleet) -> None:
    p = fleet.taskkit("submit", "tkteam.where", "--wait", "--json", "--timeout", "60")
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert out["state"] == "SUCCESS" and out["result"]["host"] in {"tk2", "tk3"}, out


def test_losing_the_primary_keeps_tasks_and_beat_running(fleet: HAFleet) -> None:
    tk2 = fleet.tb.hosts["tk2"]
    runs = fleet.beacon_runs()
    t0 = time.monotonic()
    fleet.tb.ssh("tk1", "systemctl stop redis-server", check=True)
    with step("ha: failover (sentinels name tk2)"):
        while fleet.primary("tk3") != tk2:
            assert time.monotonic() - t0 < 60, fleet.sentinel("tk3", "SENTINEL MASTER taskkit")
            time.sleep(0.2)
    promoted = time.monotonic() - t0
    with step("ha: failover (a task from the controller runs)"):
        p = fleet.taskkit("submit", "tkteam.where", "--wait", "--json", "--timeout", "90")
        assert p.returncode == 0, p.stdout + p.stderr
        assert json.loads(p.stdout)["state"] == "SUCCESS", p.stdout
    task_done = time.monotonic() - t0
    with step("ha: failover (beat fires again)"):
        while (now := fleet.beacon_runs()) < runs + 2:
            assert time.monotonic() - t0 < 120, (runs, now)
            time.sleep(1)
    beat_fired = time.monotonic() - t0
    log(f"failover: primary stopped -> tk2 named {promoted:.1f}s, a task ran {task_done:.1f}s, beat fired twice {beat_fired:.1f}s")
    assert fleet.replication("tk2")["role"] == "master"


@pytest.mark.usefixtures("verify_step")
def test_the_old_primary_returns_as_a_replica(fleet: HAFleet) -> None:
    tk2 = fleet.tb.hosts["tk2"]
    fleet.tb.ssh("tk1", "systemctl start redis-server", check=True)
    deadline, info = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        info = fleet.replication("tk1")
        if (info.get("role"), info.get("master_host"), info.get("master_link_status")) == ("slave", tk2, "up"):
            break
        time.sleep(0.5)
    assert (info.get("role"), info.get("master_host"), info.get("master_link_status")) == ("slave", tk2, "up"), info
    conf = fleet.tb.ssh("tk1", "cat /etc/redis/redis.conf", check=True).stdout
    assert f"replicaof {tk2} {REDIS_PORT}" in conf, conf  # Sentinel had Redis record it (CONFIG REWRITE)


def test_playbook_after_the_failover_changes_nothing(fleet: HAFleet) -> None:
    with step("ha: idempotence (after the failover)"):
        out, recap = fleet.playbook("site.yml")
    assert changed(recap) == dict.fromkeys(fleet.tb.hosts, 0), [line for line in out.splitlines() if line.startswith("changed:")]
    tk2 = fleet.tb.hosts["tk2"]
    assert fleet.replication("tk2")["role"] == "master"  # the promoted replica stays the primary
    assert fleet.replication("tk1")["master_host"] == tk2
    assert all(fleet.primary(h) == tk2 for h in ("tk1", "tk2", "tk3"))


def test_check_mode_reports_no_change(fleet: HAFleet) -> None:
    # redis.yml: the new roles (redis, sentinel, tls); test_playbooks.py checks site.yml's check mode (a minute more here).
    with step("ha: check mode (after the failover)"):
        out, recap = fleet.playbook("redis.yml", "--check", "--diff")
    assert changed(recap) == dict.fromkeys(fleet.tb.hosts, 0), [line for line in out.splitlines() if line.startswith("changed:")]
    p = fleet.taskkit("submit", "tkteam.where", "--wait", "--json", "--timeout", "60")
    assert p.returncode == 0 and json.loads(p.stdout)["state"] == "SUCCESS", p.stdout + p.stderr


def test_secrets_stay_out_of_logs(fleet: HAFleet) -> None:
    logs = "".join(f.read_text() for f in fleet.tmp.glob("*.log"))
    journals = "".join(
        fleet.tb.ssh(h, "journalctl --no-pager -u redis-server -u redis-sentinel", check=True).stdout for h in fleet.tb.hosts
    )
    for key in ("replication", "sentinel-user", "sentinel", "app"):
        assert fleet.passwords[key] not in logs, key
        assert fleet.passwords[key] not in journals, key


def test_teardown_leaves_nothing(fleet: HAFleet) -> None:
    tb, state = fleet.tb, dict(fleet.tb.state)
    tb.down()
    assert leftovers(state, tb.name) == []
