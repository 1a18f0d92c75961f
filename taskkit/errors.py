"""One exception tree: every error taskkit raises says what is wrong and what to do."""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches


class TaskkitError(Exception):
    """Base of every taskkit error; its message is one line meant for a person."""


class ConfigError(TaskkitError):
    def __init__(self, key: str, value: object, expected: str, *, source: str = "") -> None:
        self.key, self.value, self.expected, self.source = key, value, expected, source
        where = f" (from {source})" if source else ""
        super().__init__(f"config {key}={value!r}{where}: expected {expected}")


class BrokerUnavailable(TaskkitError):
    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"cannot reach Redis at {url}: {reason}. Run `taskkit dev up` or set TASKKIT_BROKER_URL to a reachable Redis.")


def _suggest(name: str, known: Iterable[str]) -> str:
    close = get_close_matches(name, list(known), n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


class UnknownTask(TaskkitError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name, self.known = name, sorted(known)
        super().__init__(
            f"unknown task {name!r}{_suggest(name, self.known)} "
            "(`taskkit routes` lists registered tasks; add your module to `imports` in taskkit.toml)"
        )


class UnknownQueue(TaskkitError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name, self.known = name, sorted(known)
        super().__init__(
            f"unknown queue {name!r}{_suggest(name, self.known)} "
            f"(declared: {', '.join(self.known)}; declare it under [queues] in taskkit.toml)"
        )


class InvalidArguments(TaskkitError):
    def __init__(self, task: str, reason: str) -> None:
        self.task, self.reason = task, reason
        super().__init__(f"bad arguments for {task}: {reason}; nothing was queued")


class InvalidOption(TaskkitError):
    """A submit option (priority, countdown, eta, …) that taskkit refuses before queueing."""

    def __init__(self, option: str, value: object, reason: str) -> None:
        self.option, self.value, self.reason = option, value, reason
        super().__init__(f"{option}={value!r}: {reason}; nothing was queued")


class DevStackError(TaskkitError):
    """The local stack cannot start, stop or be found."""
