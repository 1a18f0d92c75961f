"""The public namespace is explicit and pinned, and the error tree is whole (httpx's test_exported_members)."""

import inspect
import types

import pytest

import taskkit
from taskkit import errors

EXPORTED = {
    # the app and settings
    "TaskkitApp", "TaskkitTask", "Settings", "create_app", "get_app", "load_settings", "PROGRESS", "final_failure",
    # submitting and results
    "submit", "submit_many", "submit_chord", "Submitted", "rerun", "result", "wait", "cleanup_results", "Progress", "progress_of",
    # routing
    "Decision", "RetryPolicy", "routes", "explain_route",
    # queues and workers
    "Message", "QueueInfo", "queue_info", "queue_depths", "peek", "purge_queue", "workers", "inspect", "ping", "revoke",
    "rate_limit", "pause", "resume", "pool_grow", "pool_shrink", "autoscale",
    # health
    "health", "redis_info", "recorder_stats", "Snapshot", "snapshot",
    # alerts (a namespace: evaluate, check, active, recent)
    "alerts",
    # run history and reports (pandas, loaded on first use)
    "events", "runs", "reports",
    # dead letters (a namespace: list, count, get, replay, drop, purge)
    "deadletters",
    # schedules
    "Schedule", "Upcoming", "add_schedule", "update_schedule", "delete_schedule", "enable_schedule", "disable_schedule",
    "get_schedule", "list_schedules", "next_runs", "run_schedule_now", "upcoming",
    # errors
    "TaskkitError", "InvalidInput", "NotFound", "Unavailable", "Conflict", "ConfigError", "InvalidArguments", "InvalidOption",
    "ScheduleError", "UnknownTask", "UnknownQueue", "UnknownSchedule", "UnknownRun", "UnknownDeadLetter", "UnknownRunbook", "BrokerUnavailable",
    "NoReply", "NotReplicated", "WaitTimeout", "DevStackError", "RunbookFailed", "AlreadyReplayed", "ReplayInProgress",
}  # fmt: skip


def test_exported_members_are_pinned():
    assert sorted(taskkit.__all__) == sorted(EXPORTED)
    assert len(taskkit.__all__) == len(set(taskkit.__all__))


def test_no_public_name_leaks_in_and_none_goes_missing():
    # what `import taskkit` binds publicly, minus submodules loaded along the way (unless exported)
    public = {n for n, v in vars(taskkit).items() if not n.startswith("_") and not (isinstance(v, types.ModuleType) and n not in EXPORTED)}
    public |= {"events", "runs", "reports"}  # bound on first use
    assert public == EXPORTED
    for name in taskkit.__all__:
        assert getattr(taskkit, name) is not None, name


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


GROUPS = (errors.InvalidInput, errors.NotFound, errors.Unavailable, errors.Conflict)
SAMPLE = {"known": ["alpha", "beta"], "done": {"a": "b"}, "problems": ["w1: no reply"], "timeout": 1.5}


@pytest.mark.parametrize("cls", [c for c in _all_subclasses(errors.TaskkitError) if c not in GROUPS], ids=lambda c: c.__name__)
def test_every_error_is_in_one_group_exported_and_says_one_line(cls):
    assert sum(issubclass(cls, g) for g in GROUPS) == 1, f"{cls.__name__} belongs to exactly one group"
    assert getattr(taskkit, cls.__name__) is cls
    assert cls.__doc__ and cls.__name__ in errors.__doc__, "drawn in the tree of errors.py's docstring"
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    exc = cls(**{p.name: SAMPLE.get(p.name, "x") for p in params if p.default is inspect.Parameter.empty})
    message = str(exc)
    assert message and "\n" not in message and len(message) < 400, message
