"""Routing is decided once: what `explain_route` says is what the message in Redis carries.

Every case is sent twice, through taskkit (TaskkitTask.apply_async) and as a plain
`send_task` by name (Celery's router), to a stack with no worker, then read back from the
queue's Redis lists. The precedence under test (taskkit.topology): call option > the task's
declaration > the first matching route > queue "default" / the chosen queue's priority.
"""

from __future__ import annotations

import pytest

import taskkit

CONFIG = """
[queues.reports]
priority = 6
[[routes]]
match = "tests.on_low"   # the task declares queue = "low"
queue = "high"
priority = 1
[[routes]]
match = "tests.urgent"   # the task declares priority = 2
queue = "reports"
[[routes]]
match = "tests.add"
queue = "high"
[[routes]]
match = "tests.rec*"
queue = "reports"
priority = 7
"""

ARGS = {"tests.add": [1, 2], "tests.record": ["k", 1], "tests.says": ["hi"], "tests.on_low": [], "tests.urgent": []}

CASES = [
    # task, call options, queue (decided by), priority (decided by)
    ("tests.on_low", {}, ("low", "task option"), (1, "route #0 'tests.on_low'")),  # route priority with a task's own queue
    ("tests.on_low", {"queue": "critical"}, ("critical", "call option"), (1, "route #0 'tests.on_low'")),
    ("tests.on_low", {"priority": 4}, ("low", "task option"), (4, "call option")),
    ("tests.urgent", {}, ("reports", "route #1 'tests.urgent'"), (2, "task option")),  # a task's priority beats the route's queue default
    ("tests.add", {}, ("high", "route #2 'tests.add'"), (3, "queue 'high' default")),
    ("tests.add", {"queue": "critical"}, ("critical", "call option"), (0, "queue 'critical' default")),
    ("tests.record", {}, ("reports", "route #3 'tests.rec*'"), (7, "route #3 'tests.rec*'")),
    ("tests.record", {"priority": 9}, ("reports", "route #3 'tests.rec*'"), (9, "call option")),
    ("tests.says", {}, ("default", "default queue"), (5, "queue 'default' default")),
    ("tests.says", {"queue": "reports"}, ("reports", "call option"), (6, "queue 'reports' default")),
]


@pytest.fixture(scope="module")
def stack(redis_port, tmp_path_factory):
    from .conftest import Stack

    s = Stack(redis_port, tmp_path_factory.mktemp("routing"), CONFIG)
    s.app.task_named("tests.add")  # imports tests.tasks
    yield s
    s.stop()


def _carried(stack, queue: str, task_id: str) -> tuple[str, int]:
    found = [m for m in taskkit.peek(queue, count=100, app=stack.app) if m.id == task_id]
    assert len(found) == 1, f"{task_id} is not waiting in {queue}"
    return queue, found[0].priority


@pytest.mark.parametrize(("task", "options", "queue", "priority"), CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_explain_is_what_the_message_carries(stack, task, options, queue, priority):
    d = taskkit.explain_route(task, app=stack.app, **options)
    assert (d.queue, d.decided_by["queue"]) == queue
    assert (d.priority, d.decided_by["priority"]) == priority
    via_taskkit = taskkit.submit(task, args=ARGS[task], app=stack.app, **options)
    via_router = stack.app.send_task(task, ARGS[task], **options)  # a plain Celery client's path
    try:
        assert _carried(stack, d.queue, via_taskkit.id) == (d.queue, d.priority)
        assert _carried(stack, d.queue, via_router.id) == (d.queue, d.priority)
    finally:
        taskkit.purge_queue(d.queue, app=stack.app)


def test_the_routes_table_lists_every_task_with_its_decision(stack):
    table = {d.task: d for d in taskkit.routes(app=stack.app)}
    assert {"tests.add", "tests.on_low", "taskkit.ops.health", "taskkit.science.simulate"} <= table.keys()
    assert (table["tests.on_low"].queue, table["tests.on_low"].priority) == ("low", 1)
    assert not any(name.startswith("celery.") for name in table)


def test_explain_refuses_what_submit_refuses(stack):
    with pytest.raises(taskkit.UnknownQueue, match="did you mean reports"):
        taskkit.explain_route("tests.add", queue="report", app=stack.app)
    with pytest.raises(taskkit.InvalidOption, match="priority=10"):
        taskkit.explain_route("tests.add", priority=10, app=stack.app)
    with pytest.raises(taskkit.UnknownTask):
        taskkit.explain_route("tests.nope", app=stack.app)
