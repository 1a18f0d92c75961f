"""The public namespace is explicit and pinned."""

import taskkit


def test_exported_members():
    assert sorted(taskkit.__all__) == sorted(
        [
            "PROGRESS",
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
            "UnknownTask",
            "cleanup_results",
            "create_app",
            "final_failure",
            "get_app",
            "health",
            "load_settings",
            "ping",
            "queue_depths",
            "result",
            "submit",
        ]
    )
    for name in taskkit.__all__:
        assert hasattr(taskkit, name), name


def test_errors_share_one_base():
    for name in ("BrokerUnavailable", "ConfigError", "DevStackError", "InvalidArguments", "InvalidOption", "UnknownQueue", "UnknownTask"):
        assert issubclass(getattr(taskkit, name), taskkit.TaskkitError)
