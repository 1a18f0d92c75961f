"""Smoke test of the testbed itself: two booted Debian 12 hosts, then a clean teardown.

The tests run in file order and share one testbed; the last one tears it down and checks
that nothing is left.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # testbed.py is a script, not a package
from testbed import Testbed, leftovers

pytestmark = pytest.mark.deploy


@pytest.fixture(scope="module")
def testbed(needs_testbed: None):
    # A name of its own, so a concurrent run (another checkout, CI) never meets this one.
    with Testbed(hosts=2, groups={"redis": ["tk1"], "workers": ["tk2"]}, name=f"tkt{os.getpid()}") as tb:
        yield tb


def test_hosts_boot_systemd_as_pid1(testbed: Testbed) -> None:
    for host in testbed.hosts:
        assert testbed.ssh(host, "cat /proc/1/comm", check=True).stdout.strip() == "systemd"
        state = testbed.ssh(host, "timeout 120 systemctl is-system-running --wait").stdout.strip()
        assert state in {"running", "degraded"}, f"{host}: {state}"


def test_hosts_have_separate_cgroup_trees(testbed: Testbed) -> None:
    # Shared trees made units fail at random (status=219/CGROUP) as hosts removed each other's cgroups.
    testbed.ssh("tk1", "systemd-run --unit=tk-probe sleep 600", check=True)
    assert testbed.ssh("tk1", "find /sys/fs/cgroup -name tk-probe.service").stdout
    assert testbed.ssh("tk2", "find /sys/fs/cgroup -name tk-probe.service").stdout == ""
    testbed.ssh("tk1", "systemctl stop tk-probe", check=True)


def test_hosts_reach_each_other_by_name(testbed: Testbed) -> None:
    # Name from /etc/hosts, then tk2's sshd banner over the lab bridge.
    assert testbed.ssh("tk1", "getent hosts tk2").stdout.split()[0] == testbed.hosts["tk2"]
    banner = testbed.ssh("tk1", "timeout 5 bash -c 'exec 3<>/dev/tcp/tk2/22; head -c 8 <&3'")
    assert banner.stdout.startswith("SSH-2.0"), banner


def test_apt_works_inside_a_host(testbed: Testbed) -> None:
    result = testbed.ssh("tk2", "apt-get update")
    assert result.returncode == 0 and "Err:" not in result.stdout, result.stdout + result.stderr


def test_hosts_carry_the_controller_ca_bundle(testbed: Testbed) -> None:
    bundle = Path("/etc/ssl/certs/ca-certificates.crt").read_text()
    assert testbed.ssh("tk1", "cat /etc/ssl/certs/ca-certificates.crt").stdout == bundle


def test_inventory_lists_hosts_and_groups(testbed: Testbed) -> None:
    text = testbed.inventory_path.read_text()
    for host, addr in testbed.hosts.items():
        assert f"{host} ansible_host={addr}" in text
    assert "[redis]\ntk1\n" in text and "[workers]\ntk2\n" in text
    assert f"ansible_ssh_private_key_file={testbed.key_path}" in text and testbed.key_path.exists()


def test_teardown_leaves_nothing(testbed: Testbed) -> None:
    state = dict(testbed.state)
    testbed.down()
    testbed.down()  # a second teardown is a no-op, as after a crash

    assert leftovers(state, testbed.name) == []
