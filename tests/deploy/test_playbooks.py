"""The playbooks on three booted Debian 12 hosts: converge, idempotence, check mode, verify,
a rolling deploy under load, and a clean teardown.

    tk1: redis        tk2: workers        tk3: workers, beat, flower, monitoring (exporter, Prometheus)

One testbed for the module; the tests run in file order and build on each other (the last
one tears the testbed down). The lint tests need no root and run first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # testbed.py is a script, not a package
from fleet import PLAYBOOKS, ROOT, Fleet, changed, needs_tool
from testbed import Testbed, leftovers, step

pytestmark = pytest.mark.deploy

GROUPS = {"redis": ["tk1"], "workers": ["tk2", "tk3"], "beat": ["tk3"], "flower": ["tk3"], "monitoring": ["tk3"]}
VARIABLES = textwrap.dedent("""\
    taskkit_imports: [tkteam.tasks]
    taskkit_limits: {time_limit: 2m, soft_time_limit: 100s}
    taskkit_schedules:
      beacon: {task: taskkit.ops.health, every: 3s}
    worker_stop_timeout: 180
    prometheus_scrape_interval: 2s
    worker_instances:
      - {name: fast, queues: [critical, high], concurrency: 1, pool: threads}
      - {name: bulk, queues: [default, low, reports], concurrency: 2, pool: prefork,
         max_tasks_per_child: 500, max_memory_per_child: 300MB}
    """)


# ---------------------------------------------------------------- lint (no hosts)


def test_yamllint_is_clean() -> None:
    p = subprocess.run([needs_tool("yamllint"), "-s", "."], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_ansible_lint_production_profile_is_clean() -> None:
    p = subprocess.run([needs_tool("ansible-lint"), "--offline"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "Profile 'production' was required, and it passed" in p.stdout + p.stderr


def test_bad_variables_fail_before_anything_changes(tmp_path: Path) -> None:
    """argument_specs: a wrong type stops the first play, with the variable's name."""
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        f"[all:vars]\nansible_connection=local\nansible_become=false\nansible_python_interpreter={sys.executable}\n"
        + "".join(f"[{g}]\nlocal1\n" for g in GROUPS)
    )
    secrets_vars = "vault_redis_app_password=x vault_redis_monitor_password=x vault_flower_password=x vault_metrics_token=x"
    p = subprocess.run(
        [
            needs_tool("ansible-playbook"),
            "-i",
            str(inventory),
            str(PLAYBOOKS / "site.yml"),
            "-e",
            "worker_stop_timeout=soon",
            "-e",
            secrets_vars,
            "--check",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOME": str(tmp_path / "ansible")},
    )
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "worker_stop_timeout" in out and "Check the variables of each role" in out, out[-3000:]
    assert "Provision" not in out.split("Check the variables of each role")[1].split("PLAY RECAP")[0], out[-3000:]


# ---------------------------------------------------------------- the fleet


@pytest.fixture(scope="module")
def fleet(needs_testbed: None, tmp_path_factory: pytest.TempPathFactory):
    needs_tool("ansible-playbook")
    tmp = tmp_path_factory.mktemp("playbooks")
    with Testbed(hosts=3, groups=GROUPS, name=f"tkp{os.getpid() % 100000}") as tb:
        yield Fleet(tb, tmp, VARIABLES)


@pytest.fixture
def verify_step(fleet: Fleet, request: pytest.FixtureRequest):
    """Each check of the converged fleet is a step of its own, named after its test."""
    with step("verify " + request.node.name.removeprefix("test_").replace("_", " ")):
        yield


def test_site_converges(fleet: Fleet) -> None:
    with step("converge"):
        _out, recap = fleet.playbook("site.yml")
    assert all(n > 0 for n in changed(recap).values()), recap
    (fleet.tmp / "controller.toml").write_text(fleet.tb.ssh("tk2", "cat /etc/taskkit/taskkit.toml", check=True).stdout)


def test_second_run_changes_nothing(fleet: Fleet) -> None:
    with step("idempotence"):
        out, recap = fleet.playbook("site.yml")
    assert changed(recap) == dict.fromkeys(fleet.tb.hosts, 0), [line for line in out.splitlines() if line.startswith("changed:")]


def test_check_mode_reports_no_change(fleet: Fleet) -> None:
    with step("check mode"):
        out, recap = fleet.playbook("site.yml", "--check", "--diff")
    assert changed(recap) == dict.fromkeys(fleet.tb.hosts, 0), [line for line in out.splitlines() if line.startswith("changed:")]


@pytest.mark.usefixtures("verify_step")
def test_services_are_active_where_declared(fleet: Fleet) -> None:
    units = {
        "tk1": ["redis-server"],
        "tk2": ["taskkit-worker@fast", "taskkit-worker@bulk"],
        "tk3": ["taskkit-worker@fast", "taskkit-worker@bulk", "taskkit-beat", "taskkit-flower", "taskkit-exporter", "prometheus"],
    }
    for host, names in units.items():
        for unit in names:
            assert fleet.tb.ssh(host, f"systemctl is-active {unit}").stdout.strip() == "active", (host, unit)
            assert fleet.tb.ssh(host, f"systemctl is-enabled {unit}").stdout.strip() == "enabled", (host, unit)
    assert fleet.tb.ssh("tk2", "systemctl is-active taskkit-beat taskkit-flower").stdout.split() == ["inactive", "inactive"]
    worker = fleet.tb.ssh("tk2", "systemctl show -p User,KillMode,TimeoutStopUSec,Restart taskkit-worker@bulk", check=True).stdout
    assert "User=taskkit" in worker and "KillMode=mixed" in worker and "Restart=on-failure" in worker, worker
    assert "TimeoutStopUSec=3min" in worker, worker
    users = fleet.tb.ssh("tk2", "ps -o user= -C celery").stdout.split()
    assert users and set(users) == {"taskkit"}, users
    env = fleet.tb.ssh("tk2", "stat -c '%a %U %G' /etc/taskkit/taskkit.env; cat /etc/taskkit/taskkit.toml", check=True).stdout
    assert env.startswith("640 root taskkit"), env
    assert fleet.passwords["app"] not in env  # the toml carries no password
    journal = fleet.tb.ssh("tk2", "journalctl -u taskkit-worker@bulk --no-pager | tail -50").stdout
    assert "ready" in journal, journal


@pytest.mark.usefixtures("verify_step")
def test_redis_is_hardened(fleet: Fleet) -> None:
    tk1 = fleet.tb.hosts["tk1"]

    def redis(cmd: str) -> str:  # redis-cli prints some errors on stdout, some on stderr
        p = fleet.tb.ssh("tk1", cmd)
        return p.stdout + p.stderr

    cli = f"redis-cli --no-auth-warning -h {tk1}"
    assert "NOAUTH" in redis(f"{cli} ping")
    assert "WRONGPASS" in redis(f"{cli} --user default --pass anything ping")
    app = f"{cli} --user taskkit --pass {fleet.passwords['app']}"
    assert fleet.tb.ssh("tk1", f"{app} ping").stdout.strip() == "PONG"
    assert fleet.tb.ssh("tk1", f"{app} config get maxmemory-policy").stdout.split() == ["maxmemory-policy", "noeviction"]
    assert fleet.tb.ssh("tk1", f"{app} config get appendfsync").stdout.split() == ["appendfsync", "everysec"]
    assert "NOPERM" in redis(f"{app} flushall")
    monitor = f"{cli} --user monitor --pass {fleet.passwords['monitor']}"
    assert fleet.tb.ssh("tk1", f"{monitor} dbsize").stdout.strip().isdigit()
    assert "NOPERM" in redis(f"{monitor} set tk-probe 1")
    listening = fleet.tb.ssh("tk1", "ss -Htln sport = :6379", check=True).stdout.split("\n")
    addresses = sorted(line.split()[3] for line in listening if line.strip())
    assert addresses == sorted([f"{tk1}:6379", "127.0.0.1:6379"]), addresses


@pytest.mark.usefixtures("verify_step")
def test_task_from_controller_runs_on_a_worker_host(fleet: Fleet) -> None:
    p = fleet.taskkit("submit", "tkteam.where", "--wait", "--json", "--timeout", "60")
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert out["state"] == "SUCCESS", out
    assert out["result"]["host"] in {"tk2", "tk3"} and out["result"]["version"] == "0.1.0", out


@pytest.mark.usefixtures("verify_step")
def test_a_worker_instance_recycles_its_pool_at_its_own_limits(fleet: Fleet) -> None:
    # the running worker's environment carries the instance's limits; taskkit's loader turns them into Celery's
    pid = fleet.tb.ssh("tk2", "systemctl show -p MainPID --value taskkit-worker@bulk", check=True).stdout.strip()
    environ = fleet.tb.ssh("tk2", f"tr '\\0' '\\n' < /proc/{pid}/environ", check=True).stdout.splitlines()
    assert {"TASKKIT_LIMITS_MAX_TASKS_PER_CHILD=500", "TASKKIT_LIMITS_MAX_MEMORY_PER_CHILD=300MB"} <= set(environ), environ
    fast = fleet.tb.ssh("tk2", "cat /etc/taskkit/worker-fast.env", check=True).stdout
    assert "MAX_TASKS_PER_CHILD" not in fast  # an instance without its own limits uses [limits]


@pytest.mark.usefixtures("verify_step")
def test_beat_fires_the_declared_schedule(fleet: Fleet) -> None:
    deadline, info = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        p = fleet.taskkit("schedules", "show", "beacon", "--json")
        assert p.returncode == 0, p.stdout + p.stderr
        info = json.loads(p.stdout)
        if (info.get("total_run_count") or 0) >= 2:
            break
        time.sleep(2)
    assert (info.get("total_run_count") or 0) >= 2, info


@pytest.mark.usefixtures("verify_step")
def test_flower_api_needs_auth(fleet: Fleet) -> None:
    url = f"http://{fleet.tb.hosts['tk3']}:5555/api/workers"
    probe = textwrap.dedent(f"""\
        import base64, json, sys, urllib.error, urllib.request
        def get(auth):
            req = urllib.request.Request({url!r})
            if auth:
                req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, json.load(r)
            except urllib.error.HTTPError as e:
                return e.code, None
        print(json.dumps([get(None), get("admin:wrong-password"), get(sys.argv[1])]))
        """)
    for _ in range(15):  # Flower learns about workers from their replies; give it a moment
        p = fleet.tb.run_in_lab([sys.executable, "-c", probe, f"admin:{fleet.passwords['flower']}"], capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        (anon, _), (wrong, _), (ok, workers) = json.loads(p.stdout)
        if ok == 200 and len(workers) == 4:
            break
        time.sleep(2)
    assert (anon, wrong, ok) == (401, 401, 200)
    assert set(workers) == {"fast@tk2", "bulk@tk2", "fast@tk3", "bulk@tk3"}, workers


@pytest.mark.usefixtures("verify_step")
def test_prometheus_scrapes_the_exporter_and_sees_a_paused_queue(fleet: Fleet) -> None:
    tk3 = fleet.tb.hosts["tk3"]
    probe = textwrap.dedent(f"""\
        import json, sys, urllib.error, urllib.parse, urllib.request
        def get(url, token=None):
            req = urllib.request.Request(url, headers={{"Authorization": "Bearer " + token}} if token else {{}})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, ""
        api = "http://{tk3}:9090/api/v1/"
        query = urllib.parse.quote('taskkit_queue_waiting_messages{{queue="reports"}}')
        exporter = "http://{tk3}:9808/metrics"
        print(json.dumps({{
            "anonymous": get(exporter)[0], "wrong": get(exporter, "wrong-token")[0], "token": get(exporter, sys.argv[1])[0],
            "targets": json.loads(get(api + "targets?state=active")[1])["data"]["activeTargets"],
            "depth": json.loads(get(api + "query?query=" + query)[1])["data"]["result"],
            "rules": json.loads(get(api + "rules")[1])["data"]["groups"],
        }}))
        """)

    def look() -> dict:
        p = fleet.tb.run_in_lab([sys.executable, "-c", probe, fleet.passwords["metrics"]], capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    assert fleet.taskkit("pause", "reports").returncode == 0  # the bulk workers stop taking from it
    try:
        for _ in range(3):
            assert fleet.taskkit("submit", "tkteam.where", "--queue", "reports").returncode == 0
        deadline, seen = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            seen = look()
            if seen["depth"] and seen["depth"][0]["value"][1] == "3":
                break
            time.sleep(2)
        assert seen["depth"] and seen["depth"][0]["value"][1] == "3", seen["depth"]
        assert [(t["labels"]["job"], t["health"]) for t in seen["targets"]] == [("taskkit", "up")], seen["targets"]
        assert (seen["anonymous"], seen["wrong"], seen["token"]) == (401, 401, 200)
        rules = {r["name"] for g in seen["rules"] for r in g["rules"]}
        assert {"TaskkitBacklog", "TaskkitNoConsumer", "TaskkitFailureRate", "TaskkitBeatSilent"} <= rules, rules
        journal = fleet.tb.ssh("tk3", "journalctl -u taskkit-exporter -u prometheus --no-pager", check=True).stdout
        assert fleet.passwords["metrics"] not in journal
    finally:
        assert fleet.taskkit("resume", "reports").returncode == 0


def test_rolling_deploy_lets_a_running_task_finish(fleet: Fleet) -> None:
    p = fleet.taskkit("submit", "tkteam.slow", "--args", "[40]", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    task_id = json.loads(p.stdout)["id"]
    deadline = time.monotonic() + 30
    while (running := json.loads(fleet.taskkit("result", task_id, "--json").stdout))["state"] != "STARTED":
        assert time.monotonic() < deadline, "the slow task did not start"
        time.sleep(0.5)
    worker, host = running["worker"], running["worker"].split("@")[1]

    fleet.write_team_package("0.2.0")  # new team code: a new release
    with step("rolling deploy"):
        fleet.playbook("deploy.yml")

    result = json.loads(fleet.taskkit("result", task_id, "--json").stdout)
    assert result["state"] == "SUCCESS", result
    assert result["result"] == {"slept": 40, "host": host, "version": "0.1.0"}, result  # the old code finished it
    # On its host, the task succeeded before the worker's warm shutdown, and ran once.
    unit = f"taskkit-worker@{worker.split('@')[0]}"
    journal = fleet.tb.ssh(host, f"journalctl -u {unit} --no-pager -o cat", check=True).stdout
    received = journal.find(f"[{task_id}] received")
    done, shutdown = journal.find(f"[{task_id}] succeeded"), journal.find("Warm shutdown", received)
    assert -1 < received < done < shutdown, journal[-3000:]
    assert journal.count(f"[{task_id}] received") == 1, journal[-3000:]
    hosts = {fleet.tb.ssh(h, "readlink /opt/taskkit/current", check=True).stdout.strip() for h in ("tk2", "tk3")}
    assert len(hosts) == 1, hosts  # both hosts on the same, new release
    versions = set()
    for _ in range(8):
        p = fleet.taskkit("submit", "tkteam.where", "--wait", "--json", "--timeout", "60")
        assert p.returncode == 0, p.stdout + p.stderr
        versions.add(json.loads(p.stdout)["result"]["version"])
    assert versions == {"0.2.0"}, versions
    assert fleet.tb.ssh("tk3", "systemctl is-active taskkit-beat taskkit-flower").stdout.split() == ["active", "active"]


def test_teardown_leaves_nothing(fleet: Fleet) -> None:
    tb, state = fleet.tb, dict(fleet.tb.state)
    tb.down()
    assert leftovers(state, tb.name) == []
