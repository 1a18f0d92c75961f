"""One exception tree: every error taskkit raises says what is wrong and what to do, in one line.

    TaskkitError
    ├── InvalidInput            refused before anything was queued, sent or stored
    │   ├── ConfigError             a setting (key, value, expected)
    │   ├── InvalidArguments        a task's args/kwargs
    │   ├── InvalidOption           an option of a call: priority, countdown, timeout, count, …
    │   └── ScheduleError           a schedule's field
    ├── NotFound                nothing by that name
    │   ├── UnknownTask · UnknownQueue · UnknownSchedule · UnknownRun · UnknownDeadLetter · UnknownRunbook
    ├── Unavailable             a part that should answer does not
    │   ├── BrokerUnavailable       Redis
    │   ├── NotReplicated           fewer replicas than broker.replicas_ack took a message in time
    │   ├── NoReply                 workers, within the timeout
    │   ├── WaitTimeout             a task, within the timeout
    │   ├── DevStackError           the local stack
    │   └── RunbookFailed           a runbook's cell (its record is kept)
    └── Conflict                the request clashes with the state it found
        ├── AlreadyReplayed · ReplayInProgress

Catch a group to handle a kind of failure (`except taskkit.NotFound`); raise only leaves.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches


class TaskkitError(Exception):
    """Base of every taskkit error; its message is one line meant for a person."""


# ---------------------------------------------------------------- groups


class InvalidInput(TaskkitError):
    """Bad input, refused at the earliest point: nothing was queued, sent or stored."""


class NotFound(TaskkitError):
    """A task, queue, schedule, run or dead letter that does not exist."""


class Unavailable(TaskkitError):
    """Redis, the workers or the local stack did not answer in time."""


class Conflict(TaskkitError):
    """The request clashes with what it found (already done, or being done by another process)."""


def _suggest(name: str, known: Iterable[str]) -> str:
    close = get_close_matches(name, list(known), n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


# ---------------------------------------------------------------- invalid input


class ConfigError(InvalidInput):
    """A setting refused at load: which key, its value, where it came from, what was expected."""

    def __init__(self, key: str, value: object, expected: str, *, source: str = "") -> None:
        self.key, self.value, self.expected, self.source = key, value, expected, source
        where = f" (from {source})" if source else ""
        super().__init__(f"config {key}={value!r}{where}: expected {expected}")


class InvalidArguments(InvalidInput):
    """A task's arguments that do not fit its signature or are not JSON."""

    def __init__(self, task: str, reason: str) -> None:
        self.task, self.reason = task, reason
        super().__init__(f"bad arguments for {task}: {reason}; nothing was queued")


class InvalidOption(InvalidInput):
    """An option of a call (priority, countdown, eta, timeout, count, rate, pool size, …)."""

    def __init__(self, option: str, value: object, reason: str) -> None:
        self.option, self.value, self.reason = option, value, reason
        super().__init__(f"{option}={value!r}: {reason}; nothing was done")


class ScheduleError(InvalidInput):
    """A schedule refused before anything was stored: which field, its value, what was expected."""

    def __init__(self, name: str, field: str, value: object, expected: str) -> None:
        self.name, self.field, self.value, self.expected = name, field, value, expected
        super().__init__(f"schedule {name!r}: {field}={value!r}: expected {expected}; nothing was stored")


# ---------------------------------------------------------------- not found


class UnknownTask(NotFound):
    """A task name no module in `imports` registers."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name, self.known = name, sorted(known)
        super().__init__(
            f"unknown task {name!r}{_suggest(name, self.known)} "
            "(`taskkit routes` lists registered tasks; add your module to `imports` in taskkit.toml)"
        )


class UnknownQueue(NotFound):
    """A queue not declared in taskkit.toml."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name, self.known = name, sorted(known)
        super().__init__(
            f"unknown queue {name!r}{_suggest(name, self.known)} "
            f"(declared: {', '.join(self.known)}; declare it under [queues] in taskkit.toml)"
        )


class UnknownSchedule(NotFound):
    """A schedule name that is not stored."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name, self.known = name, sorted(known)
        super().__init__(f"unknown schedule {name!r}{_suggest(name, self.known)} (`taskkit schedules list` shows them)")


class UnknownRun(NotFound):
    """A task id the run history has no record of."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"no recorded run {task_id!r} (older than history.max_age, or never recorded)")


class UnknownDeadLetter(NotFound):
    """A task id with no dead letter."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"no dead letter {task_id!r} (`taskkit dlq list` shows them)")


class UnknownRunbook(NotFound):
    """A runbook name with no notebook in the runbooks directory."""

    def __init__(self, name: str, directory: str, known: Iterable[str]) -> None:
        self.name, self.directory, self.known = name, directory, sorted(known)
        super().__init__(f"no runbook {name!r} in {directory} (there: {', '.join(self.known) or 'none'}; --dir picks another directory)")


# ---------------------------------------------------------------- unavailable


class BrokerUnavailable(Unavailable):
    """Redis refused, timed out or is not there; `url` has its password masked."""

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"cannot reach Redis at {url}: {reason}. Run `taskkit dev up` or set TASKKIT_BROKER_URL to a reachable Redis.")


class NotReplicated(Unavailable):
    """A message queued on the primary that fewer than broker.replicas_ack replicas acknowledged in time."""

    def __init__(self, what: str, acked: int, wanted: int, timeout: float) -> None:
        self.what, self.acked, self.wanted, self.timeout = what, acked, wanted, timeout
        super().__init__(
            f"{what} is queued on the Redis primary, but only {acked} of broker.replicas_ack={wanted} replicas had it "
            f"within {timeout:g}s: it is lost if the primary fails before they catch up; check the replicas "
            f"(`redis-cli INFO replication`) or lower broker.replicas_ack"
        )


class NoReply(Unavailable):
    """Workers that did not answer a command within its timeout (or no worker at all)."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class WaitTimeout(Unavailable):
    """A task that did not finish within the time waited for it."""

    def __init__(self, task_id: str, timeout: float) -> None:
        self.task_id, self.timeout = task_id, timeout
        super().__init__(
            f"task {task_id} did not finish within {timeout:g}s; is a worker running? "
            f"(`taskkit workers`; check later with `taskkit result {task_id}`)"
        )


class DevStackError(Unavailable):
    """The local stack cannot start, stop or be found."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class RunbookFailed(Unavailable):
    """A runbook that did not run to its end: which cell, why, and where its record is."""

    def __init__(self, name: str, record: str, reason: str) -> None:
        self.name, self.record, self.reason = name, record, reason
        kept = f" (record: {record})" if record else ""
        super().__init__(f"runbook {name} failed: {reason}{kept}")


# ---------------------------------------------------------------- conflict


class AlreadyReplayed(Conflict):
    """Dead letters replayed before; replaying them again needs force."""

    def __init__(self, done: dict[str, str]) -> None:
        self.done = done
        ids = ", ".join(f"{k} (as {v})" for k, v in done.items())
        super().__init__(f"already replayed: {ids}; replay again with force (--force)")


class ReplayInProgress(Conflict):
    """A dead letter claimed by another replay whose lease has not run out."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"dead letter {task_id} is being replayed by another process; retry after its claim lease (60 s) or use force")
