"""The pure floors, with no redis-server: value kinds, the schedule spec, routing decisions,
key names and the history's row format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from taskkit import errors
from taskkit.capture import rows
from taskkit.config import load_settings
from taskkit.keys import Keys
from taskkit.kinds import COUNT, DURATION, POSITIVE, PRIORITY, TIMEOUT, epoch, parse_duration, refuse
from taskkit.schedule_spec import ScheduleSpec, parse_spec
from taskkit.topology import Topology

# ---------------------------------------------------------------- value kinds


@pytest.mark.parametrize(
    ("text", "seconds"), [(30, 30.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("7d", 604800.0), ("250ms", 0.25)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["-1s", "soon", True, None, "1w", -3])
def test_bad_durations_are_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [(PRIORITY, [0, 9], [10, -1, True, "1"]), (COUNT, [0, 5], [-1, 1.5]), (POSITIVE, [1], [0]), (TIMEOUT, [0.1, "2s"], [0, "0s"])],
)
def test_kinds_accept_and_refuse(kind, good, bad):
    for value in good:
        kind.check(value)
    for value in bad:
        with pytest.raises(errors.InvalidOption) as exc:
            refuse("x", value, kind)
        assert str(exc.value).startswith(f"x={value!r}: expected {kind.expected}")


def test_time_bounds():
    now = 1_000_000.0
    assert epoch(None, now=now) is None
    assert epoch("1h", now=now) == now - 3600
    assert epoch(timedelta(minutes=1), now=now) == now - 60
    assert epoch(datetime.fromtimestamp(5, UTC), now=now) == 5
    with pytest.raises(errors.InvalidOption, match="until='soon'"):
        epoch("soon", now=now, option="until")
    assert DURATION.check("1m") == 60


# ---------------------------------------------------------------- the schedule spec


def test_schedule_spec_kinds():
    assert parse_spec("a", {"task": "t", "every": "15m"}) == ScheduleSpec(task="t", every=900.0)
    cron = parse_spec("b", {"task": "t", "cron": "0  3 * * *", "timezone": "Europe/Berlin", "priority": 2})
    assert (cron.cron, cron.timezone, cron.priority) == ("0 3 * * *", "Europe/Berlin", 2)
    one = parse_spec("c", {"task": "t", "at": "2099-01-01T09:00:00.5+02:00"})
    assert one.at == datetime(2099, 1, 1, 7, tzinfo=UTC)  # to the second, any zone


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"task": "t"}, "schedule"),
        ({"task": "t", "every": 1, "cron": "* * * * *"}, "schedule"),
        ({"task": "t", "cron": "0 3 * * *"}, "timezone"),
        ({"task": "t", "cron": "61 3 * * *", "timezone": "UTC"}, "cron"),
        ({"task": "t", "every": "1m", "priority": 10}, "priority"),
        ({"task": "t", "at": "2000-01-01T00:00:00+00:00"}, "at"),
        ({"task": "t", "every": "1m", "speed": 3}, "speed"),
    ],
)
def test_schedule_spec_refusals_name_the_field(raw, field):
    with pytest.raises(errors.ScheduleError) as exc:
        parse_spec("x", raw)
    assert exc.value.field == field


# ---------------------------------------------------------------- routing decisions


@pytest.fixture
def topology(tmp_path):
    config = tmp_path / "taskkit.toml"
    config.write_text('[queues.reports]\npriority = 6\n[[routes]]\nmatch = "r.*"\nqueue = "reports"\nmax_retries = 7\n')
    return Topology(load_settings(config, env={}))


def test_decisions_follow_the_precedence(topology):
    assert (topology.decide("x").queue, topology.decide("x").priority) == ("default", 5)
    d = topology.decide("r.one")
    assert (d.queue, d.priority, d.retry.max_retries, d.decided_by["queue"]) == ("reports", 6, 7, "route #0 'r.*'")
    d = topology.decide("r.one", {"queue": "low", "max_retries": 1}, {"priority": 0})
    assert (d.queue, d.priority, d.retry.max_retries) == ("low", 0, 1)
    assert d.decided_by == {"queue": "task option", "priority": "call option", "retry": "[retry] defaults + task option"}
    assert topology.route("r.two", options={"queue": "high"}) == {"queue": "high", "priority": 3}  # Celery's router: the same


# ---------------------------------------------------------------- key names and the row format


def test_key_names():
    keys = Keys("tk", transport_options={"global_keyprefix": "k:"})
    assert keys.runs() == "tk:runs" and keys.run_index("abc") == "tk:run:abc"
    assert keys.deadletter("i") == "tk:dlq:entry:i" and keys.deadletter_queue("q") == "tk:dlq:queue:q"
    assert keys.recorder_stats() == "tk:recorder"
    assert keys.queue("q") == "k:q" and keys.queue("q", 3) == "k:q\x06\x163"
    assert len(keys.queue_levels("q")) == 10 and keys.unacked() == "k:unacked"


def test_rows_round_trip():
    fields = {"event": "failed", "ts": "1.5", "task": "t", "id": "i", "priority": 3, "exc_message": rows.text("two\nlines")}
    row = rows.pack(dict(fields))
    assert "\n" not in row and row.startswith(rows.VERSION + rows.SEP)
    back = rows.unpack(row.encode())
    assert {k: back[k] for k in fields} == {k: str(v) for k, v in fields.items()}
    assert back["worker"] == "" and back["version"] == rows.VERSION
    with pytest.raises(ValueError, match="format '9'"):
        rows.unpack("9" + row[1:])


def test_cut_marks_long_values():
    text, was_cut = rows.cut(["x" * 100], 20)
    assert was_cut and len(text) == 20 and text.endswith(rows.CUT_MARK)
    assert rows.cut([1], 20) == ("[1]", False)


def test_both_history_parsers_give_the_same_frame(monkeypatch):
    """pyarrow's CSV reader (the notebook extra) and pandas' own parser: the same columns, types and values."""
    import sys

    import pandas as pd

    from taskkit import history

    packed = [
        rows.pack({"event": "sent", "ts": "1764650000.25", "task": "t.a", "id": "123", "queue": "q", "priority": 5, "args": "[1]"}),
        rows.pack({"event": "failed", "ts": "1764650001.5", "task": "t.b", "id": "x-1", "exc_type": "KeyError",
                   "exc_message": rows.text("no\nkey"), "attempt": 2, "cut": "args"}),
    ]  # fmt: skip
    data = "\n".join(packed).encode()
    arrow = history._frame(data)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails: pandas' parser
    plain = history._frame(data)
    pd.testing.assert_frame_equal(arrow, plain, check_categorical=False)
    assert plain["id"].tolist() == ["123", "x-1"] and plain.loc[1, "exc_message"] == "no\nkey" and plain["cut"].tolist() == [False, True]
    empty = history._frame(b"")
    assert list(empty.columns) == list(arrow.columns) and str(empty["ts"].dtype) == "datetime64[ns, UTC]"
