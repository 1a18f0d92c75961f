"""Poison messages: whatever sits in a queue's list, the worker dead-letters what it cannot run and
keeps consuming; the good tasks behind every kind of poison all run."""

from __future__ import annotations

import base64
import json
import pickle

import taskkit
from taskkit import deadletters as dlq

from .conftest import wait_until


def _template(stack) -> dict:
    """A real message as kombu stored it (taken from Redis, nothing consumes yet)."""
    taskkit.submit("tests.record", args=["template", 0], app=stack.app)
    key = stack.app.keys.queue("default", 5)
    raw = stack.redis.rpop(key)
    return json.loads(raw)


def _variant(template: dict, n: int, *, body: bytes | None = None, **changes) -> bytes:
    msg = json.loads(json.dumps(template))
    msg["headers"] = dict(msg["headers"], id=f"poison-{n}")
    if body is not None:
        msg["body"] = base64.b64encode(body).decode()
        msg["properties"]["body_encoding"] = "base64"
    for key, value in changes.items():
        msg[key.replace("_", "-")] = value
    return json.dumps(msg).encode()


def test_no_message_takes_a_worker_down(make_stack):
    stack = make_stack('[limits]\nmax_message_bytes = "100KB"\n')
    t = _template(stack)
    poison = {
        "poison-1": _variant(t, 1, body=json.dumps("just a string").encode()),  # the body of the wrong shape
        "poison-2": _variant(t, 2, body=b"{not json"),
        "poison-3": _variant(t, 3, content_type="application/x-unknown"),
        "poison-4": _variant(t, 4, body=pickle.dumps([["pickled"], {}, {}]), content_type="application/x-python-serialize"),
        "poison-5": _variant(t, 5, body=json.dumps([["x" * 300_000, 1], {}, {}]).encode()),  # huge
    }
    headerless = json.loads(_variant(t, 6, body=json.dumps([[], {}, {}]).encode()))
    headerless["headers"] = {}
    key = stack.app.keys.queue("default", 5)
    for raw in [*poison.values(), json.dumps(headerless).encode()]:
        stack.redis.lpush(key, raw)  # oldest first: the worker meets the poison before the good tasks
    good = [taskkit.submit("tests.record", args=["poison-good", i], app=stack.app) for i in range(5)]

    worker = stack.start_worker("sturdy", concurrency=1)
    wait_until(lambda: stack.redis.llen("poison-good") == 5, 30, "the five good tasks behind the poison")
    assert worker.poll() is None  # still consuming
    assert all(r.get(timeout=10) is None for r in good)

    letters = {e["id"]: e for e in dlq.entries(app=stack.app) if e["exc_type"] == "PoisonMessage"}
    assert set(poison) <= letters.keys() and len(letters) == 6, sorted(letters)
    reasons = {i: letters[i]["exc_message"] for i in poison}
    assert "unusable task message" in reasons["poison-1"]
    assert "cannot decode" in reasons["poison-2"] and "ContentDisallowed" in reasons["poison-3"]  # only JSON is accepted
    assert "ContentDisallowed" in reasons["poison-4"]  # refused, never unpickled
    assert "over twice limits.max_message_bytes" in reasons["poison-5"] and letters["poison-5"]["raw"].endswith("…[cut]")
    assert any("no task header" in e["exc_message"] for e in letters.values())
    assert all(e["queue"] == "default" for e in letters.values())
    assert stack.redis.llen(key) == 0
