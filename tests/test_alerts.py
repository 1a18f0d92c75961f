"""[alerts]: thresholds fire when crossed and resolve when recovered, one record each way; the webhook."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import redis

import taskkit
from taskkit import alerts

from .conftest import Stack, free_port, pings, wait_until


def keys(transitions) -> set[str]:
    return {t["key"] for t in transitions}


def test_backlog_and_no_consumer_fire_once_and_resolve_once(make_stack):
    stack = make_stack("[alerts]\nbacklog = 3\n")
    for i in range(3):
        taskkit.submit("tests.add", args=[i, 1], app=stack.app)  # no worker yet: they wait
    first = alerts.check(app=stack.app)
    assert keys(first["fired"]) == {"backlog:default", "no_consumer:default"}
    backlog = next(t for t in first["fired"] if t["rule"] == "backlog")
    assert backlog["value"] == 3 and backlog["threshold"] == 3 and "3 messages waiting" in backlog["message"]
    assert alerts.check(app=stack.app)["fired"] == []  # still firing: not recorded again
    assert {a["rule"] for a in alerts.active(app=stack.app)} == {"backlog", "no_consumer"}

    stack.start_worker("drain")
    wait_until(lambda: taskkit.queue_depths(app=stack.app)["default"] == 0, 20, "the queue to drain")
    done = alerts.check(app=stack.app)
    assert keys(done["resolved"]) == {"backlog:default", "no_consumer:default"} and done["firing"] == []
    assert alerts.check(app=stack.app)["resolved"] == []
    log = alerts.recent(app=stack.app)
    assert sorted((t["state"], t["rule"]) for t in log) == [
        ("firing", "backlog"), ("firing", "no_consumer"), ("resolved", "backlog"), ("resolved", "no_consumer")
    ]  # fmt: skip
    assert alerts.active(app=stack.app) == []


def test_failure_rate_and_new_dead_letters(make_stack):
    stack = make_stack('[alerts]\nfailure_rate = 0.5\nmin_runs = 4\nwindow = "5m"\ndeadletters = 2\n')
    stack.start_worker("rates")
    for i in range(2):
        taskkit.submit("tests.add", args=[i, 1], app=stack.app).get(timeout=20)
    assert alerts.check(app=stack.app)["fired"] == []  # 2 runs: under min_runs
    for _ in range(3):
        taskkit.submit("tests.fails_with", args=["alert-fail", "KeyError"], app=stack.app)
    wait_until(lambda: (taskkit.runs(app=stack.app)["state"] == "FAILURE").sum() == 3, 20, "three failures")
    alerts.check(app=stack.app)
    fired = {a["rule"]: a for a in alerts.active(app=stack.app)}
    assert fired["failure_rate"]["value"] == 0.6 and "60% of the 5 runs" in fired["failure_rate"]["message"]
    assert fired["deadletters"]["value"] == 3
    for i in range(3):
        taskkit.submit("tests.add", args=[i, 2], app=stack.app).get(timeout=20)
    wait_until(lambda: (taskkit.runs(app=stack.app)["state"] == "SUCCESS").sum() == 5, 20, "five successes recorded")
    assert keys(alerts.check(app=stack.app)["resolved"]) == {"failure_rate:all"}  # 3 of 8


def test_oldest_waiting_and_beat_silent(make_stack):
    stack = make_stack(
        '[alerts]\noldest_waiting = "1s"\nbacklog = 0\nno_consumer = false\n[beat]\nmax_interval = "0.2s"\nlock_timeout = "1.5s"\n'
    )
    taskkit.submit("tests.add", args=[1, 1], app=stack.app)
    taskkit.add_schedule("hourly", "tests.add", every="1h", args=[1, 2], app=stack.app)
    time.sleep(1.2)
    fired = {t["rule"]: t for t in alerts.check(app=stack.app)["fired"]}
    assert set(fired) == {"oldest_waiting", "beat_silent"}
    assert fired["oldest_waiting"]["value"] >= 1.2 and fired["oldest_waiting"]["subject"] == "default"
    assert "no beat has ticked while 1 schedules exist" in fired["beat_silent"]["message"]
    stack.start_beat()  # holds the lock; its first tick (what the rule reads) follows
    wait_until(lambda: keys(alerts.check(app=stack.app)["resolved"]) == {"beat_silent:all"}, 5, "beat_silent to resolve")


def test_redis_memory_ratio(tmp_path):
    port = free_port()
    server = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--save", "", "--maxmemory", "100mb", "--databases", "256"],
                              stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until(lambda: pings(redis.Redis(port=port)), 10, "redis-server")
        stack = Stack(port, tmp_path, "[alerts]\nredis_memory = 0.001\n")
        fired = {t["rule"]: t for t in alerts.check(app=stack.app)["fired"]}
        assert 0.001 <= fired["redis_memory"]["value"] < 0.5 and "of maxmemory" in fired["redis_memory"]["message"]
        stack.app.close()
    finally:
        server.terminate()
        server.wait(10)


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []
    status = 200

    def do_POST(self) -> None:
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(Hook.status)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_the_webhook_gets_each_transition_and_a_failing_one_breaks_nothing(make_stack, caplog):
    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook?token=s3cret"
        stack = make_stack(f'[alerts]\nbacklog = 1\nno_consumer = false\nwebhook = "{url}"\n')
        Hook.received.clear()
        taskkit.submit("tests.add", args=[1, 1], app=stack.app)
        alerts.check(app=stack.app)
        assert [(h["state"], h["key"]) for h in Hook.received] == [("firing", "backlog:default")]
        taskkit.purge_queue("default", app=stack.app)
        alerts.check(app=stack.app)
        assert [h["state"] for h in Hook.received] == ["firing", "resolved"]

        Hook.status = 500  # the webhook fails every attempt: the check still works and records the alert
        taskkit.submit("tests.add", args=[1, 1], app=stack.app)
        start = time.monotonic()
        checked = alerts.check(app=stack.app)
        assert keys(checked["fired"]) == {"backlog:default"} and time.monotonic() - start < 5
        assert len(Hook.received) == 5  # three attempts of the third transition
        assert "webhook on 127.0.0.1 failed 3 times" in caplog.text and "s3cret" not in caplog.text
    finally:
        Hook.status = 200
        server.shutdown()
