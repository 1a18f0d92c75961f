"""Where the testbed cannot work, its pre-flight check says why, in one line, within seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.deploy

TESTBED = Path(__file__).with_name("testbed.py")
PRIVILEGE_DROPS = {  # case -> (how setpriv runs a process without it, what the reason must name)
    "not root": (["--reuid=65534", "--regid=65534", "--clear-groups"], "needs root"),
    "no CAP_NET_ADMIN": (["--bounding-set=-net_admin"], "lacks CAP_NET_ADMIN"),
}


@pytest.mark.parametrize("case", PRIVILEGE_DROPS)
def test_preflight_says_why_within_seconds(case: str) -> None:
    options, expected = PRIVILEGE_DROPS[case]
    if os.geteuid() != 0:
        wrapper, expected = [], "needs root"  # already unprivileged: nothing to drop, and root is checked first
    elif setpriv := shutil.which("setpriv"):
        wrapper = [setpriv, *options]
    else:
        pytest.skip("setpriv (util-linux) is missing, so privileges cannot be dropped")
    # The source on stdin, run by the system's interpreter: nobody may not be allowed to read the checkout or its venv.
    code = "import sys, types; tb = types.ModuleType('testbed'); exec(sys.stdin.read(), tb.__dict__); print(tb.preflight())"
    python = os.path.realpath(sys.executable)
    t0 = time.monotonic()
    p = subprocess.run([*wrapper, python, "-c", code], input=TESTBED.read_text(), cwd="/", capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert expected in p.stdout and len(p.stdout.splitlines()) == 1, p.stdout + p.stderr
    assert seconds < 2, f"{seconds:.1f}s: {p.stdout}"
