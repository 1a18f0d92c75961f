"""Built-in tasks on a real worker: health, result cleanup, and the science sweep."""

from __future__ import annotations

import taskkit
from taskkit.tasks import science

from .conftest import wait_until


def test_health_reports_latency_workers_and_backlog(shared_stack):
    report = taskkit.submit("taskkit.ops.health", app=shared_stack.app).get(timeout=15)
    assert report["workers"] >= 1
    assert 0 < report["redis_latency_ms"] < 1000
    assert set(report["backlog"]) == set(shared_stack.settings.queues)


def test_cleanup_removes_results_without_ttl_only(make_stack):
    stack = make_stack("[broker]\nresult_expires = 0\n")  # 0: results never expire by themselves
    stack.app.backend.store_result("forever-1", 1, "SUCCESS")
    stack.app.backend.store_result("forever-2", 2, "SUCCESS")
    kept = make_stack()  # results with a TTL, in another database
    kept.app.backend.store_result("ttl-1", 3, "SUCCESS")
    assert taskkit.cleanup_results(older_than=3600, app=stack.app) == {"scanned": 2, "deleted": 0}  # too young
    assert taskkit.cleanup_results(older_than=0, app=stack.app) == {"scanned": 2, "deleted": 2}
    assert taskkit.cleanup_results(older_than=0, app=kept.app) == {"scanned": 1, "deleted": 0}


def test_sweep_fans_out_and_gathers_a_dataframe(shared_stack):
    seen = []
    res = science.start_sweep([0.2, 0.4], [0.1, 0.2], replicates=20, days=60, app=shared_stack.app)
    rows = science.wait_sweep(res, timeout=30, on_progress=lambda done, total: seen.append((done, total)))
    frame = science.sweep_frame(rows)
    assert frame.shape[0] == 4 and list(frame.index.names) == ["beta", "gamma"]
    assert frame.loc[(0.4, 0.1), "r0"] == 4.0
    # a higher R0 infects more people
    assert frame.loc[(0.4, 0.1), "attack_rate"] > frame.loc[(0.2, 0.2), "attack_rate"]
    assert seen[-1] == (4, 4)


def test_report_task_summarises_the_history(shared_stack):
    res = taskkit.submit("tests.add", args=[1, 2], app=shared_stack.app)
    res.get(timeout=10)

    # the worker writes its events within ~50 ms of the task ending
    def recorded():
        table = taskkit.runs(app=shared_stack.app)
        return "SUCCESS" in set(table[table["id"] == res.id]["state"])

    wait_until(recorded, 5, "the run's events")
    report = taskkit.submit("taskkit.ops.report", kwargs={"since": "1h"}, app=shared_stack.app).get(timeout=15)
    assert set(report) == {"window", "tasks", "top_exceptions"}
    assert any(t["task"] == "tests.add" and t["runs"] >= 1 for t in report["tasks"])
