"""The deploy suite's shared parts: one pre-flight check for the tests that boot hosts, and
the testbed's log and steps shown live in pytest's output, with the steps' times at the end."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # testbed.py is a script, not a package
import testbed


@pytest.hookimpl(trylast=True)  # after the terminal reporter is registered
def pytest_configure(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:  # -p no:terminal: the log stays on stderr
        return

    def show(line: str) -> None:
        # Past the output capture, as pytest's live logging does, so it shows while the test runs.
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.ensure_newline()  # ends a "tests/deploy/test_x.py .." progress line
            if reporter._tw.width_of_current_line:  # a test's "." written since the last of these lines
                reporter.write("\n")
            reporter.write_line(line)

    testbed.show = show


@pytest.fixture(scope="session")
def needs_testbed() -> None:
    """Requested by the fixtures that boot hosts; pytest_runtest_setup skips their tests where the testbed cannot work."""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Skipped from a hook rather than the fixture, so the skip is reported at this line and
    # -ra shows all those tests under one reason instead of one line each.
    if "needs_testbed" in getattr(item, "fixturenames", ()) and (reason := testbed.preflight()):
        pytest.skip(f"the testbed cannot boot hosts here: {reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not testbed.STEP_TIMES:
        return
    terminalreporter.write_sep("=", "deploy steps")
    width = max(len(name) for name, _, _ in testbed.STEP_TIMES)
    for name, seconds, succeeded in testbed.STEP_TIMES:
        terminalreporter.write_line(f"{name:<{width}}  {seconds:6.1f}s{'' if succeeded else '  FAILED'}")
