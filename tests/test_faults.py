"""The fault suite: real processes killed and restarted while work flows, with counts.

Each loop runs a short version by default; `pytest --long-faults` runs the full one (the
counts the README quotes).
"""

from __future__ import annotations

import random
import signal
import time

import taskkit

from .conftest import Stack, wait_until

FAST_BEAT = """
[beat]
max_interval = "0.2s"
lock_timeout = "1.5s"
"""


def _sent(stack: Stack, queue: str) -> int:
    return sum(stack.redis.llen(key) for key in stack.app.keys.queue_levels(queue))


def test_a_warm_beat_stop_loses_no_run(make_stack, repetitions):
    """SIGTERM lands at random points of busy ticks: every run beat recorded was sent."""
    stack = make_stack(FAST_BEAT)
    names = [f"busy{i}" for i in range(40)]
    for name in names:
        taskkit.add_schedule(name, "tests.record", every="0.1s", args=[name, 1], app=stack.app)
    reps = repetitions(5, 20)
    rng = random.Random(11)

    def recorded() -> int:
        return sum(s.total_run_count for s in taskkit.list_schedules(app=stack.app))

    for rep in range(reps):
        beat = stack.start_beat(f"beat{rep}")
        first = recorded()
        wait_until(lambda first=first: recorded() > first + 40, 10, "busy ticks")
        time.sleep(rng.random() * 0.3)
        beat.send_signal(rng.choice([signal.SIGTERM, signal.SIGINT]))
        beat.wait(10)  # a warm stop: it exits by itself
    total = recorded()
    assert total > reps * 40
    assert _sent(stack, "default") == total
