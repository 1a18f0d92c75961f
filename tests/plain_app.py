"""A plain Celery app, nothing of taskkit: the worker that bulk-published messages must satisfy.

`celery -A tests.plain_app worker -Q default` with PLAIN_BROKER_URL set. Its tasks have the
names of taskkit's test tasks and do the same. Configured is only what every worker of a
deployment shares with the producer: the broker and result URL, JSON, and kombu's priority
levels (taskkit's 0-9, without which a worker reads other Redis lists).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

URL = os.environ["PLAIN_BROKER_URL"]

app = Celery("plain", broker=URL, backend=URL)
app.conf.update(
    accept_content=["json"],
    task_serializer="json",
    result_serializer="json",
    broker_transport_options={"queue_order_strategy": "priority", "priority_steps": list(range(10))},
    task_default_queue="default",
)


@app.task(name="tests.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tests.says")
def says(text: Any) -> Any:
    return text
