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


class UnknownRun(TaskkitError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"no recorded run {task_id!r} (older than history.max_age, or never recorded)")


class InvalidControlOption(TaskkitError):
    """An option of a queue or worker command (count, rate, pool size, timeout) refused before anything is sent."""

    def __init__(self, option: str, value: object, reason: str) -> None:
        self.option, self.value, self.reason = option, value, reason
        super().__init__(f"{option}={value!r}: {reason}; nothing was sent")


class ScheduleError(TaskkitError):
    """A schedule refused before anything was stored: which field, its value, what was expected."""

    def __init__(self, name: str, field: str, value: object, expected: str) -> None:
        self.name, self.field, self.value, self.expected = name, field, value, expected
        super().__init__(f"schedule {name!r}: {field}={value!r}: expected {expected}; nothing was stored")


class UnknownSchedule(TaskkitError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name, self.known = name, sorted(known)
        super().__init__(f"unknown schedule {name!r}{_suggest(name, self.known)} (`taskkit schedules list` shows them)")


class UnknownDeadLetter(TaskkitError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"no dead letter {task_id!r} (`taskkit dlq list` shows them)")


class AlreadyReplayed(TaskkitError):
    def __init__(self, done: dict[str, str]) -> None:
        self.done = done
        ids = ", ".join(f"{k} (as {v})" for k, v in done.items())
        super().__init__(f"already replayed: {ids}; replay again with force (--force)")


class ReplayInProgress(TaskkitError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"dead letter {task_id} is being replayed by another process; retry after its claim lease (60 s) or use force")
