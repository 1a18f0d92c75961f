"""End to end in a real browser: `taskkit lab`, headless Chromium, 00-quickstart run from the Run menu.

The cluster view must render as a live ipywidget (not the text/html fallback) with the
test's real worker in its table; with UPDATE_SCREENSHOT=1 the screenshot becomes docs/cluster-view.png.

Chromium and its driver come from Debian (`chromium`, `chromium-driver`: the driver always
matches the browser, and nothing is downloaded at run time). When they are missing the test
installs them with apt-get as root, and skips, with one reason, only where that is not possible.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, free_port, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PACKAGES = ["chromium", "chromium-driver"]
# as root Chromium needs --no-sandbox; the rest keeps it off the network and deterministic
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a small /dev/shm
    "--no-proxy-server",
    "--window-size=1400,1100",
]
TOKEN = "taskkit-browser-test"
SCREENSHOT = ROOT / "docs" / "cluster-view.png"


def _missing() -> list[str]:
    return [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 1, "", "timed out after 900 s")


@functools.cache
def _chromium_missing() -> str | None:
    """None when Chromium and chromedriver are there (installed now if need be, quietly), else why not, in one line."""
    missing = _missing()
    if not missing:
        return None
    install = ["install", "-y", "--no-install-recommends", *PACKAGES]
    if shutil.which("apt-get") is None:
        why = "there is no apt-get"
    elif os.geteuid() != 0:
        why = "not root"
    else:
        out = _apt(*install)
        if out.returncode != 0:  # stale package lists: update once, try again
            _apt("update")
            out = _apt(*install)
        if not (missing := _missing()):
            return None
        last = (out.stderr.strip() or out.stdout.strip() or "no output").splitlines()[-1]
        why = f"`apt-get {' '.join(install)}` " + (f"failed: {last}" if out.returncode else f"left {', '.join(missing)} missing")
    return f"needs Debian's {' and '.join(PACKAGES)} ({', '.join(missing)} missing), which cannot be installed here: {why}"


LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1: never through a proxy


def _http_status(url: str) -> int | None:
    try:
        with LOCAL.open(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _descendants(pid: int) -> list[int]:
    """PIDs below `pid` (the kernels run in sessions of their own, so the group does not reach them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


class Lab:
    """`taskkit lab` in its own process group, with a fresh HOME and Jupyter dirs (no user settings)."""

    def __init__(self, stack: Any, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "lab.log"
        notebooks = tmp_path / "notebooks"
        shutil.copytree(ROOT / "notebooks", notebooks)  # JupyterLab autosaves: keep the committed notebook as it is
        home = tmp_path / "home"
        settings = home / "lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        # no "get notified about Jupyter news?" toast over the screenshot, no update check (no internet)
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {k: v for k, v in stack.env.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
        env.update(
            HOME=str(home),
            JUPYTER_CONFIG_DIR=str(home / "jupyter-config"),
            JUPYTER_DATA_DIR=str(home / "jupyter-data"),  # the lab extensions (widgets) stay found under sys.prefix
            JUPYTER_RUNTIME_DIR=str(home / "jupyter-runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(home / "lab-workspaces"),
            IPYTHONDIR=str(home / "ipython"),
        )
        script = Path(sys.executable).with_name("taskkit")  # the console script, as a user starts it
        taskkit = str(script) if script.exists() else shutil.which("taskkit") or "taskkit"
        argv = [taskkit, "lab", "--port", str(self.port), "--dir", str(notebooks), "--token", TOKEN]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=tmp_path, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def api(self, path: str, method: str = "GET") -> Any:
        with LOCAL.open(urllib.request.Request(f"{self.url}/api/{path}?token={TOKEN}", method=method), timeout=5) as response:
            return json.loads(response.read() or b"null")

    def kernel_ready(self) -> bool:
        """One session, its one kernel idle with the page connected to it (the page's own indicator says idle before)."""
        try:
            sessions, kernels = self.api("sessions"), self.api("kernels")
        except (OSError, ValueError):  # /api/kernels can answer 500 while a kernel starts (jupyter_server 2.21)
            return False
        return (
            len(sessions) == 1
            and [k["id"] for k in kernels] == [sessions[0]["kernel"]["id"]]
            and kernels[0]["execution_state"] == "idle"
            and kernels[0]["connections"] >= 1
        )

    def wait_ready(self, timeout: float) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"taskkit lab exited with {self.proc.returncode}")
            return _http_status(f"{self.url}/api/status?token={TOKEN}") == 200

        try:
            wait_until(up, timeout, "JupyterLab to answer /api/status", interval=0.25)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- taskkit lab log:\n{self.tail()}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            below = _descendants(self.proc.pid)
            # the server shuts its kernels down; then the group (taskkit lab, jupyter) and whatever is left below
            try:
                self.api("shutdown", method="POST")
                self.proc.wait(15)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            for pid in below:
                try:
                    if b"ipykernel" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass
        self.proc.wait(10)


@pytest.fixture
def chromium() -> None:
    reason = _chromium_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def lab(chromium: None, make_stack: Any, tmp_path: Path) -> Iterator[Lab]:
    stack = make_stack()
    stack.start_worker("browser", concurrency=1)
    server = Lab(stack, tmp_path)
    try:
        server.wait_ready(60)
        yield server
    finally:
        server.stop()  # before make_stack's teardown stops the worker and the app


@pytest.fixture
def browser(chromium: None, tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


# The notebook's state, read in the page: the code cells' prompts, the text of live widget views (ipywidgets' DOM,
# not the text/html fallback, which renders as .jp-RenderedHTMLCommon), every output, a dialog if one is open.
STATE_JS = """
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
if (!panel) return null;
const text = (sel) => Array.from(panel.querySelectorAll(sel), (e) => e.innerText);
return {
  prompts: text('.jp-CodeCell .jp-InputArea-prompt'),
  kernel: (panel.querySelector('.jp-Notebook-ExecutionIndicator') || {dataset: {}}).dataset.status || null,
  widgets: text('.jp-OutputArea-output > .jupyter-widgets .widget-html'),
  buttons: text('.jp-OutputArea-output > .jupyter-widgets button'),
  rows: Array.from(
    panel.querySelectorAll('.jp-OutputArea-output > .jupyter-widgets .widget-html tr'),
    (tr) => Array.from(tr.cells, (c) => c.innerText),
  ),
  outputs: text('.jp-OutputArea-output'),
  dialog: (document.querySelector('.jp-Dialog') || {}).innerText || null,
};
"""


def test_quickstart_renders_the_cluster_view_in_chromium(lab: Lab, browser: Any, tmp_path: Path) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    assert _http_status(f"{lab.url}/api/status") == 403, "JupyterLab answers without the token"
    worker = f"browser@{socket.gethostname()}"
    state: dict[str, Any] | None = None
    try:
        browser.get(f"{lab.url}/lab/tree/00-quickstart.ipynb?token={TOKEN}")
        # loaded: the code cells are there and the kernel is up, the page connected to it (a kernel dialog, if one comes, is
        # accepted). Clicking Run before that would start a second kernel, or run nothing.
        wait = WebDriverWait(browser, 60, poll_frequency=0.25)
        ready: list[bool] = []

        def loaded(d: Any) -> dict[str, Any] | None:
            s = d.execute_script(STATE_JS)
            if s and s["dialog"]:
                return s
            ready.append(bool(s and s["prompts"] and s["kernel"] == "idle" and lab.kernel_ready()))
            return s if ready[-2:] == [True, True] else None  # twice in a row: no kernel change under way

        for _ in range(3):
            state = wait.until(loaded, "the notebook loaded, its kernel idle")
            if not state["dialog"]:
                break
            browser.find_element(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept").click()
            wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".jp-Dialog"), "the dialog to close")
        else:
            raise AssertionError(f"a dialog keeps coming back: {state['dialog']}")

        def menu(name: str, command: str) -> None:
            browser.find_element(By.XPATH, f"//div[contains(@class,'lm-MenuBar-itemLabel') and text()='{name}']").click()
            item = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f'li.lm-Menu-item[data-command="{command}"]')), command)
            assert "lm-mod-disabled" not in (item.get_attribute("class") or ""), f"{name} > {item.text} is disabled"
            item.click()

        # as a user would: Edit > Clear Outputs of All Cells (no committed output can pass for this run's), Run > Run All Cells
        menu("Edit", "editmenu:clear-all")
        wait.until(lambda d: (s := d.execute_script(STATE_JS)) and set(s["prompts"]) == {"[ ]:"} and not s["outputs"], "outputs cleared")
        for attempt in range(3):  # the cells show [*] at once once they are sent; else the click was lost: again
            menu("Run", "runmenu:run-all")
            try:
                started = WebDriverWait(browser, 10, poll_frequency=0.25)
                started.until(lambda d: set(d.execute_script(STATE_JS)["prompts"]) != {"[ ]:"}, "Run All Cells to start the cells")
                break
            except TimeoutException:
                if attempt == 2:
                    raise

        def done(d: Any) -> dict[str, Any] | None:
            nonlocal state
            state = d.execute_script(STATE_JS)
            ran = state and state["prompts"] == [f"[{n}]:" for n in range(1, len(state["prompts"]) + 1)] and state["kernel"] == "idle"
            return state if ran and any(worker in w for w in state["widgets"]) else None

        WebDriverWait(browser, 90, poll_frequency=0.5).until(done, f"every cell run, the cluster view rendered with {worker} in it")
        assert state is not None
        assert any("('SUCCESS', True)" in out for out in state["outputs"]), state["outputs"]  # the health task ran
        assert {"Refresh", "Live"} <= {b.strip() for b in state["buttons"]}, state["buttons"]
        (table,) = (w for w in state["widgets"] if worker in w)
        assert "Workers" in table and "Queues" in table and "default" in table, table

        # Live is on: the view, read before the health task ran, shows it processed within a refresh or two
        def processed(d: Any) -> dict[str, Any] | None:
            nonlocal state
            state = d.execute_script(STATE_JS)
            header = next(r for r in state["rows"] if r and r[0] == "worker")
            row = next((r for r in state["rows"] if r and r[0] == worker), None)
            return state if row and int(row[header.index("processed")] or 0) >= 1 else None

        WebDriverWait(browser, 20, poll_frequency=0.5).until(processed, "the live view to show the health task processed")
        # the page as a user sees it, the view's cell at the top
        browser.execute_script(
            "arguments[0].closest('.jp-CodeCell').scrollIntoView({block: 'start'})",
            browser.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output > .jupyter-widgets.widget-vbox"),
        )
        time.sleep(0.5)
        browser.save_screenshot(str(tmp_path / "cluster-view.png"))
    except Exception as exc:
        browser.save_screenshot(str(tmp_path / "failure.png"))
        why = exc.msg if isinstance(exc, TimeoutException) else exc  # not chromedriver's native stack trace
        raise AssertionError(
            f"{type(exc).__name__}: {why}\nlast notebook state: {json.dumps(state)[:6000]}\n"
            f"screenshot: {tmp_path / 'failure.png'}\n--- taskkit lab log:\n{lab.tail()}"
        ) from exc
    if os.environ.get("UPDATE_SCREENSHOT"):  # UPDATE_SCREENSHOT=1 renews the README's picture; a plain run leaves it alone
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "cluster-view.png", SCREENSHOT)
