"""Schedules against a real Redis and real beat and worker processes.

Fast beats: ticks of at most 0.2 s and a 1.5 s lock, so a standby takes over in about 2 s.
The crontab test comes last: it waits for the minute boundary after the live stack starts,
while the other tests run.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
from celery.schedules import schedule as interval
from click.testing import CliRunner

import taskkit
from taskkit.cli import main
from taskkit.config import load_settings
from taskkit.errors import ConfigError, ScheduleError, UnknownSchedule, UnknownTask
from taskkit.keys import redbeat_keys
from taskkit.schedule_spec import ZonedCrontab
from taskkit.schedule_store import next_after

from .conftest import Stack, free_port, pings, wait_until

FAST_BEAT = """
[beat]
max_interval = "0.2s"
lock_timeout = "1.5s"
"""


def runs(stack: Stack, key: str) -> int:
    return stack.redis.llen(key)


def log_of(stack: Stack, name: str) -> str:
    path = stack.dir / f"{name}.log"
    return path.read_text() if path.is_file() else ""


def sent(stack: Stack, queue: str) -> list[dict]:
    """Headers of the messages waiting in a queue (no worker): what beat sent, once each."""
    return [json.loads(raw)["headers"] for key in stack.app.keys.queue_levels(queue) for raw in stack.redis.lrange(key, 0, -1)]


# ---------------------------------------------------------------- a live stack: beat + worker


@pytest.fixture(scope="module")
def live(redis_port, tmp_path_factory):
    """Beat and a worker on one stack; an every-minute crontab is added first (tested last)."""
    stack = Stack(redis_port, tmp_path_factory.mktemp("live"), FAST_BEAT)
    stack.minutely = taskkit.add_schedule(
        "minutely", "tests.record", cron="* * * * *", timezone="Asia/Kathmandu", args=["minutely", 1], app=stack.app
    )
    stack.start_worker("live")
    stack.start_beat("live")
    yield stack
    stack.stop()


def test_an_interval_schedule_fires_and_the_task_runs(live):
    taskkit.add_schedule("quick", "tests.record", every="0.3s", args=["quick", 1], app=live.app)
    wait_until(lambda: runs(live, "quick") >= 3, 10, "three runs")
    s = taskkit.get_schedule("quick", app=live.app)
    assert s.total_run_count >= 3 and datetime.now(UTC) - s.last_run_at < timedelta(seconds=2)


def test_disable_stops_sends_and_enable_resumes(live):
    taskkit.add_schedule("toggle", "tests.record", every="0.25s", args=["toggle", 1], app=live.app)
    wait_until(lambda: runs(live, "toggle") >= 2, 10, "runs")
    taskkit.disable_schedule("toggle", app=live.app)
    time.sleep(0.5)  # a run sent just before the disable may still be on its way
    count, recorded = runs(live, "toggle"), taskkit.get_schedule("toggle", app=live.app).total_run_count
    time.sleep(1.2)
    assert runs(live, "toggle") == count and taskkit.get_schedule("toggle", app=live.app).total_run_count == recorded
    taskkit.enable_schedule("toggle", app=live.app)
    wait_until(lambda: runs(live, "toggle") >= count + 2, 5, "runs to resume")


def test_an_update_changes_the_interval_without_a_restart(live):
    taskkit.add_schedule("slow", "tests.record", every="1h", args=["slow", 1], app=live.app)
    time.sleep(0.5)
    assert runs(live, "slow") == 0
    updated = taskkit.update_schedule("slow", every="0.3s", app=live.app)
    assert updated.spec == "0.3s" and updated.next_run_at < datetime.now(UTC) + timedelta(seconds=1)
    wait_until(lambda: runs(live, "slow") >= 3, 5, "the new interval")


def test_run_now_sends_once_without_changing_the_schedule(live):
    before = taskkit.add_schedule("report", "tests.record", every="1h", args=["report", 1], app=live.app)
    taskkit.run_schedule_now("report", app=live.app)
    wait_until(lambda: runs(live, "report") == 1, 10, "the run")
    after = taskkit.get_schedule("report", app=live.app)
    assert (after.next_run_at, after.total_run_count, after.last_run_at) == (before.next_run_at, 0, None)


# ---------------------------------------------------------------- bad input: one error, nothing stored

NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"cron": "61 * * * *", "timezone": "UTC"}, ScheduleError, "cron='61 * * * *'"),
        ({"cron": "* * * *", "timezone": "UTC"}, ScheduleError, "a cron expression"),
        ({"cron": "0 3 * * *"}, ScheduleError, "explicit IANA time zone"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus_Mons"}, ScheduleError, "timezone='Mars/Olympus_Mons'"),
        ({"every": 0}, ScheduleError, "positive duration"),
        ({"every": "-5m"}, ScheduleError, "positive duration"),
        ({"at": datetime(2099, 1, 1, 9)}, ScheduleError, "naive time is ambiguous"),
        ({"at": NOW - timedelta(minutes=1)}, ScheduleError, "a time in the future"),
        ({"every": 5, "cron": "* * * * *"}, ScheduleError, "exactly one of every, cron or at"),
        ({"every": 5, "task": "tests.nope"}, UnknownTask, "unknown task 'tests.nope'"),
        ({"every": 5, "task": "tests.add", "args": [1]}, ScheduleError, "missing a required argument"),
        ({"every": 5, "queue": "nope"}, ScheduleError, "queue='nope'"),
    ],
)
def test_bad_input_is_one_error_and_nothing_is_stored(make_stack, options, error, text):
    stack = make_stack()
    options = {"task": "tests.record", "args": ["k", 1], **options}
    with pytest.raises(error) as exc:
        taskkit.add_schedule("bad", options.pop("task"), app=stack.app, **options)
    assert text in str(exc.value) and "\n" not in str(exc.value)
    assert stack.redis.dbsize() == 0  # nothing stored


def test_a_bad_update_leaves_the_schedule_as_it_was(make_stack):
    stack = make_stack()
    taskkit.add_schedule("nightly", "tests.record", cron="0 3 * * *", timezone="Europe/Berlin", args=["k", 1], app=stack.app)
    key = redbeat_keys(stack.app).entry("nightly")
    before = stack.redis.hgetall(key), stack.redis.zrange(redbeat_keys(stack.app).schedule, 0, -1, withscores=True)
    for options in ({"cron": "0 25 * * *"}, {"timezone": "Nowhere/Land"}, {"every": -1}, {"task": "tests.nope"}, {"args": [1, 2, 3]}):
        with pytest.raises((ScheduleError, UnknownTask)):
            taskkit.update_schedule("nightly", app=stack.app, **options)
    assert (stack.redis.hgetall(key), stack.redis.zrange(redbeat_keys(stack.app).schedule, 0, -1, withscores=True)) == before


@pytest.mark.parametrize(
    ("table", "key", "text"),
    [
        ('task = "tests.record"\ncron = "0 3 * *"\ntimezone = "UTC"', "schedules.x.cron", "cron expression"),
        ('task = "tests.record"\ncron = "0 3 * * *"\ntimezone = "Europe/Nowhere"', "schedules.x.timezone", "IANA time zone"),
        ('task = "tests.record"\nevery = "0s"', "schedules.x.every", "positive duration"),
        ('task = "tests.record"\nat = 2030-01-01T09:00:00', "schedules.x.at", "naive"),
        ('task = "tests.record"\nevery = "1m"\nqueue = "nope"', "schedules.x.queue", "declared queue"),
        ('task = "tests.record"\nevery = "1m"\nspeed = 3', "schedules.x.speed", "one of task"),
    ],
)
def test_bad_declared_schedules_fail_at_load_naming_the_key(tmp_path, table, key, text):
    path = tmp_path / "taskkit.toml"
    path.write_text(f"[schedules.x]\n{table}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={})
    assert exc.value.key == key and text in str(exc.value)


def test_a_declared_schedule_with_an_unknown_task_stops_beat_before_it_writes(make_stack):
    stack = make_stack(FAST_BEAT + '[schedules.x]\ntask = "tests.nope"\nevery = "1s"\n')
    beat = stack.start_beat("bad", wait=False)
    assert beat.wait(30) != 0
    assert "unknown task 'tests.nope'" in log_of(stack, "bad")
    assert stack.redis.dbsize() == 0  # nothing stored


# ---------------------------------------------------------------- the API and CLI without beat


def test_add_list_show_upcoming_enable_disable_delete(make_stack):
    stack = make_stack('[schedules.declared]\ntask = "tests.record"\nevery = "1h"\nargs = ["d", 1]\n')
    app = stack.app
    hourly = taskkit.add_schedule("hourly", "tests.record", every="1h", args=["h", 1], app=app)
    nightly = taskkit.add_schedule(
        "nightly", "tests.record", cron="0 3 * * *", timezone="Europe/Berlin", args=["n", 1], queue="low", app=app
    )
    once = taskkit.add_schedule("once", "tests.record", at=datetime.now(UTC) + timedelta(hours=30), args=["o", 1], app=app)
    assert (hourly.kind, hourly.spec, hourly.total_run_count, hourly.last_run_at) == ("every", "1h", 0, None)
    assert (nightly.kind, nightly.spec, nightly.timezone, nightly.queue) == ("cron", "0 3 * * *", "Europe/Berlin", "low")
    listed = taskkit.list_schedules(app=app)
    assert [s.name for s in listed] == [s.name for s in sorted(listed, key=lambda s: s.next_run_at)]
    assert {s.name for s in listed} == {"hourly", "nightly", "once"}  # the declared one syncs when beat starts

    # a cron's next fire times are 03:00 in its own zone, on consecutive days, whatever the UTC offset
    times = taskkit.next_runs("nightly", count=4, app=app)
    assert [(t.hour, t.minute) for t in times] == [(3, 0)] * 4 and times[0] == nightly.next_run_at
    assert [(b.date() - a.date()).days for a, b in itertools.pairwise(times)] == [1, 1, 1]
    assert all(t.tzinfo == ZoneInfo("Europe/Berlin") for t in times)
    assert taskkit.next_runs("once", app=app) == [once.next_run_at]

    window = taskkit.upcoming(window="24h", app=app)
    assert sum(u.name == "hourly" for u in window) == 24 and sum(u.name == "nightly" for u in window) == 1
    assert not any(u.name == "once" for u in window)  # 30 h away
    assert window == sorted(window, key=lambda u: u.at)

    paused = taskkit.disable_schedule("hourly", app=app)
    assert not paused.enabled and paused.next_run_at is None
    assert not any(u.name == "hourly" for u in taskkit.upcoming(window="24h", app=app))
    assert taskkit.list_schedules(app=app)[-1].name == "hourly"  # disabled ones come last
    resumed = taskkit.enable_schedule("hourly", app=app)
    assert resumed.enabled and resumed.next_run_at > datetime.now(UTC)

    moved = taskkit.update_schedule("nightly", cron="30 4 * * 1-5", app=app)  # a new cron keeps its zone
    assert (moved.spec, moved.timezone, moved.args) == ("30 4 * * 1-5", "Europe/Berlin", ["n", 1])
    assert moved.next_run_at.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M %a") in {
        f"04:30 {d}" for d in ("Mon", "Tue", "Wed", "Thu", "Fri")
    }
    with pytest.raises(ScheduleError, match="timezone=None"):
        taskkit.update_schedule("hourly", cron="0 * * * *", app=app)  # an interval has no zone to keep

    taskkit.delete_schedule("once", app=app)
    with pytest.raises(UnknownSchedule, match="unknown schedule 'once'"):
        taskkit.get_schedule("once", app=app)
    with pytest.raises(ScheduleError, match="name not in use"):
        taskkit.add_schedule("hourly", "tests.record", every=5, args=["h", 1], app=app)
    with pytest.raises(ScheduleError, match=r"declared ones change in taskkit\.toml"):
        taskkit.update_schedule("declared", every="5m", app=app)


def test_a_cron_keeps_its_wall_clock_across_dst_and_an_interval_keeps_its_grid():
    berlin = ZonedCrontab("0", "3", timezone="Europe/Berlin")
    # Europe/Berlin moves to summer time on 2026-03-29: 03:00 local is 02:00 UTC, then 01:00 UTC
    first = next_after(berlin, datetime(2026, 3, 27, 12, tzinfo=UTC))
    second = next_after(berlin, first)
    assert (first.astimezone(UTC).hour, second.astimezone(UTC).hour) == (2, 1)
    assert second.astimezone(UTC) - first.astimezone(UTC) == timedelta(hours=23)
    every = interval(timedelta(minutes=15))
    due = datetime(2030, 1, 1, 12, tzinfo=UTC)
    # sent 40 min late (beat was down): the missed runs are skipped, the grid stays
    assert next_after(every, due + timedelta(minutes=40), anchor=due) == due + timedelta(minutes=45)


@pytest.fixture
def cli(make_stack, monkeypatch):
    stack = make_stack()
    monkeypatch.setenv("TASKKIT_BROKER_URL", stack.url)

    def run(*args: str):
        return CliRunner().invoke(main, ["--config", str(stack.config_path), *args])

    return run


def test_cli_tables_json_and_one_line_errors(cli):
    out = cli("schedules", "add", "health", "tests.record", "--every", "5m", "--args", '["h", 1]')
    assert out.exit_code == 0 and "every 5m" in out.output, out.output
    out = cli("schedules", "add", "nightly", "tests.record", "--cron", "0 3 * * *", "--timezone", "UTC", "--args", '["n", 1]', "--json")
    assert json.loads(out.output)["spec"] == "0 3 * * *"
    listed = cli("schedules", "list")
    assert listed.output.splitlines()[0].split()[:3] == ["name", "schedule", "task"] and "health" in listed.output
    shown = json.loads(cli("schedules", "show", "health", "--next", "3", "--json").output)
    assert shown["total_run_count"] == 0 and len(shown["next_runs"]) == 3
    upcoming = cli("schedules", "upcoming", "--window", "1h", "--json")
    assert [u["name"] for u in json.loads(upcoming.output)].count("health") == 12
    assert cli("schedules", "disable", "health").exit_code == 0
    assert "health" not in cli("schedules", "upcoming", "--window", "1h").output

    for args, code, text in [
        (
            ["schedules", "add", "x", "tests.record", "--args", '["k", 1]', "--cron", "0 3 * * *", "--timezone", "Mars/Base"],
            1,
            "timezone='Mars/Base'",
        ),
        (["schedules", "add", "x", "tests.record", "--args", '["k", 1]'], 1, "exactly one of every, cron or at"),
        (["schedules", "add", "x", "tests.record", "--every", "1m", "--at", "2099-01-01T00:00:00+00:00"], 1, "exactly one"),
        (["schedules", "add", "x", "tests.record", "--every", "1m", "--args", "[1,"], 2, "not valid JSON"),
        (["schedules", "add", "x", "tests.record", "--at", "2099-01-01T09:00:00", "--args", '["k", 1]'], 1, "naive"),
        (["schedules", "show", "nope"], 1, "unknown schedule 'nope'"),
        (["schedules", "list", "--limit", "0"], 1, "limit=0: expected a whole number ≥ 1"),
        (["schedules", "upcoming", "--limit", "-1"], 1, "limit=-1"),
        (["schedules", "upcoming", "--window", "soon"], 1, "window='soon'"),
    ]:
        out = cli(*args)
        assert out.exit_code == code and text in out.output and "Traceback" not in out.output, (args, out.output)
    assert "x" not in cli("schedules", "list").output.split()


# ---------------------------------------------------------------- one active beat, fenced


def test_standby_takes_over_after_sigkill_and_no_run_is_sent_twice(make_stack):
    stack = make_stack(FAST_BEAT)
    taskkit.add_schedule("tick", "tests.record", every="0.25s", args=["never-run", 1], queue="low", app=stack.app)
    active = stack.start_beat("active")
    stack.start_beat("standby", wait=False)
    wait_until(lambda: "beat: Starting" in log_of(stack, "standby"), 30, "standby beat")
    wait_until(lambda: len(sent(stack, "low")) >= 4, 10, "the active beat to send")
    assert "Acquired lock" not in log_of(stack, "standby")  # one active beat

    os.killpg(active.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: "Acquired lock" in log_of(stack, "standby"), 10, "the standby to take over")
    took = time.monotonic() - killed
    assert took <= 1.5 + 0.2 + 1.0  # lock timeout + one standby poll + slack
    before = len(sent(stack, "low"))
    wait_until(lambda: len(sent(stack, "low")) >= before + 4, 10, "the new active beat to send")
    stack.beats[-1].send_signal(signal.SIGTERM)
    stack.beats[-1].wait(10)

    dues = [h["taskkit_due"] for h in sent(stack, "low") if h.get("taskkit_schedule") == "tick"]
    assert len(dues) == len(set(dues)), "a scheduled run was sent twice"
    times = sorted(datetime.fromisoformat(d) for d in dues)
    assert all((b - a).total_seconds() >= 0.24 for a, b in itertools.pairwise(times))
    assert "Sending due task tick" in log_of(stack, "active")
    assert "Sending due task tick" in log_of(stack, "standby")
    assert taskkit.get_schedule("tick", app=stack.app).total_run_count == len(dues)


def test_a_stalled_beat_loses_the_lock_stands_by_and_takes_over_later_without_double_sends(make_stack):
    stack = make_stack(FAST_BEAT)
    taskkit.add_schedule("tock", "tests.record", every="0.25s", args=["never-run", 1], queue="low", app=stack.app)
    first = stack.start_beat("first")
    second = stack.start_beat("second", wait=False)
    wait_until(lambda: len(sent(stack, "low")) >= 3 and "beat: Starting" in log_of(stack, "second"), 30, "both beats")

    os.killpg(first.pid, signal.SIGSTOP)  # a stall longer than the lock timeout (swap, a long GC)
    wait_until(lambda: "Acquired lock" in log_of(stack, "second"), 10, "the standby to take over")
    count = len(sent(stack, "low"))
    wait_until(lambda: len(sent(stack, "low")) >= count + 3, 10, "the second beat to send")
    os.killpg(first.pid, signal.SIGCONT)
    wait_until(lambda: "standing by" in log_of(stack, "first"), 10, "the stalled beat to notice")
    time.sleep(0.6)
    after_stall = log_of(stack, "first").split("standing by", 1)[1]
    assert "Sending due task" not in after_stall  # its lock is gone, so it sends nothing

    os.killpg(second.pid, signal.SIGKILL)
    wait_until(lambda: log_of(stack, "first").count("Acquired lock") == 2, 10, "the first beat to take over again")
    count = len(sent(stack, "low"))
    wait_until(lambda: len(sent(stack, "low")) >= count + 3, 10, "the first beat to send again")
    first.send_signal(signal.SIGTERM)
    first.wait(10)

    dues = [h["taskkit_due"] for h in sent(stack, "low") if h.get("taskkit_schedule") == "tock"]
    assert len(dues) == len(set(dues)), "a scheduled run was sent twice"
    assert taskkit.get_schedule("tock", app=stack.app).total_run_count == len(dues)


# ---------------------------------------------------------------- declared schedules and restarts


def test_declared_schedules_sync_deleted_ones_go_and_runtime_ones_stay_across_restarts(make_stack):
    declared = """
[schedules.keep]
task = "tests.record"
every = "0.25s"
args = ["keep", 1]
queue = "low"

[schedules.gone]
task = "tests.record"
every = "1h"
args = ["gone", 1]
"""
    stack = make_stack(FAST_BEAT + declared)
    app = stack.app
    taskkit.add_schedule("mine", "tests.record", every="1h", args=["mine", 1], app=app)
    taskkit.add_schedule("paused", "tests.record", every="0.25s", args=["paused", 1], enabled=False, app=app)
    stack.start_beat("first")
    wait_until(lambda: "declared schedules synced" in log_of(stack, "first"), 10, "the sync")  # after the lock, in the first tick
    wait_until(lambda: taskkit.get_schedule("keep", app=app).total_run_count >= 3, 10, "the declared schedule to run")
    found = {s.name: s for s in taskkit.list_schedules(app=app)}
    assert set(found) == {"keep", "gone", "mine", "paused"}
    assert found["keep"].declared and found["gone"].declared and not found["mine"].declared
    assert found["paused"].total_run_count == 0  # disabled: never sent
    assert "maxmemory-policy" not in log_of(stack, "first")  # noeviction: no warning

    stack.beats[-1].send_signal(signal.SIGTERM)  # a warm stop releases the lock
    stack.beats[-1].wait(10)
    stopped = {s.name: s for s in taskkit.list_schedules(app=app)}
    stack.config_path.write_text(
        'imports = ["tests.tasks"]\n'
        + FAST_BEAT
        + '[schedules.keep]\ntask = "tests.record"\nevery = "0.25s"\nargs = ["keep", 2]\nqueue = "low"\n'
    )
    stack.start_beat("second")
    wait_until(lambda: "declared schedules synced" in log_of(stack, "second"), 10, "the sync")
    after = {s.name: s for s in taskkit.list_schedules(app=app)}
    assert set(after) == {"keep", "mine", "paused"}  # gone is gone; runtime ones stay
    assert not stack.redis.exists(redbeat_keys(app).entry("gone"))
    assert after["keep"].args == ["keep", 2]
    assert after["mine"] == stopped["mine"] and after["paused"] == stopped["paused"]  # untouched, still disabled
    assert after["keep"].total_run_count >= stopped["keep"].total_run_count  # the run record survives the restart
    wait_until(lambda: taskkit.get_schedule("keep", app=app).total_run_count >= stopped["keep"].total_run_count + 2, 10, "runs to go on")
    stack.beats[-1].send_signal(signal.SIGTERM)
    stack.beats[-1].wait(10)
    assert [h["taskkit_schedule"] for h in sent(stack, "low")].count("keep") == taskkit.get_schedule("keep", app=app).total_run_count


@pytest.fixture
def aof_redis(tmp_path):
    """A redis-server of our own with AOF on (and an evicting policy), restartable."""
    port, data = free_port(), tmp_path / "aof"
    data.mkdir()
    argv = [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(data)]
    argv += ["--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "allkeys-lru", "--databases", "256"]
    procs: list[subprocess.Popen] = []

    def start() -> None:
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        client = redis.Redis(port=port)
        wait_until(lambda: pings(client), 10, "redis-server")

    start()
    yield port, start, procs
    for proc in procs:
        proc.kill()
        proc.wait(10)


def test_schedules_and_run_records_survive_a_redis_restart_with_aof(aof_redis, tmp_path):
    port, start_redis, procs = aof_redis
    stack = Stack(port, tmp_path, FAST_BEAT)
    try:
        app = stack.app
        taskkit.add_schedule("often", "tests.record", every="0.25s", args=["often", 1], app=app)
        taskkit.add_schedule("off", "tests.record", cron="0 3 * * *", timezone="America/New_York", args=["off", 1], enabled=False, app=app)
        stack.start_beat("before")
        wait_until(lambda: taskkit.get_schedule("often", app=app).total_run_count >= 3, 10, "runs")
        assert "maxmemory-policy is allkeys-lru" in log_of(stack, "before")
        stack.beats[-1].send_signal(signal.SIGTERM)
        stack.beats[-1].wait(10)
        before = taskkit.list_schedules(app=app)

        procs[-1].kill()  # a crash, not a clean shutdown: only the AOF brings the data back
        procs[-1].wait(10)
        start_redis()
        after = taskkit.list_schedules(app=app)
        assert after == before and after[0].total_run_count >= 3 and after[0].last_run_at is not None
        assert not after[1].enabled

        stack.start_beat("after")
        wait_until(lambda: taskkit.get_schedule("often", app=app).total_run_count >= before[0].total_run_count + 2, 10, "runs to go on")
    finally:
        stack.stop()


# ---------------------------------------------------------------- last: the crontab's minute has come


def test_a_crontab_schedule_fires_at_its_minute_and_the_task_runs(live):
    wait_until(lambda: runs(live, "minutely") >= 1, 70, "the minute boundary")
    s = taskkit.get_schedule("minutely", app=live.app)
    assert s.total_run_count >= 1 and s.last_run_at.second == 0  # sent within the second of its minute
    assert s.last_run_at >= live.minutely.next_run_at  # not before its time
    assert s.next_run_at.second == 0 and s.next_run_at > s.last_run_at
