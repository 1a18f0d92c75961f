"""The public namespace is explicit and pinned."""

import taskkit


def test_exported_members():
    assert sorted(taskkit.__all__) == sorted(
        [
            "PROGRESS",
            "AlreadyReplayed",
            "ReplayInProgress",
            "UnknownDeadLetter",
            "BrokerUnavailable",
            "ConfigError",
            "DevStackError",
            "InvalidArguments",
            "InvalidOption",
            "Settings",
            "TaskkitApp",
            "TaskkitError",
            "TaskkitTask",
            "UnknownQueue",
            "UnknownRun",
            "UnknownTask",
            "cleanup_results",
            "create_app",
            "deadletters",
            "final_failure",
            "get_app",
            "health",
            "load_settings",
            "ping",
            "queue_depths",
            "reports",
            "rerun",
            "result",
            "runs",
            "submit",
            # queues and workers
            "InvalidControlOption",
            "Message",
            "QueueInfo",
            "autoscale",
            "inspect",
            "pause",
            "peek",
            "pool_grow",
            "pool_shrink",
            "purge",
            "queue_info",
            "rate_limit",
            "resume",
            "revoke",
            "workers",
            # schedules
            "Schedule",
            "ScheduleError",
            "UnknownSchedule",
            "Upcoming",
            "add_schedule",
            "delete_schedule",
            "disable_schedule",
            "enable_schedule",
            "get_schedule",
            "list_schedules",
            "next_runs",
            "run_schedule_now",
            "update_schedule",
            "upcoming",
        ]
    )
    for name in taskkit.__all__:
        assert hasattr(taskkit, name), name


def test_errors_share_one_base():
    for name in ("BrokerUnavailable", "ConfigError", "DevStackError", "InvalidArguments", "InvalidOption", "UnknownQueue", "UnknownTask"):
        assert issubclass(getattr(taskkit, name), taskkit.TaskkitError)
    for name in ("ScheduleError", "UnknownSchedule"):
        assert issubclass(getattr(taskkit, name), taskkit.TaskkitError)
