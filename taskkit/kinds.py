"""Value kinds shared by config, the API and the CLI: durations, priorities, whole numbers,
URLs, time bounds. Each is checked here once, with one wording of what is expected.

A Kind's `check` returns the clean value or raises ValueError; `refuse` turns that into the
InvalidOption a public function raises, so every caller refuses a value the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from .errors import InvalidOption

PRIORITIES = range(10)  # Redis transport: 0 is the highest priority
URL_SCHEMES = ("redis", "rediss", "sentinel")


@dataclass(frozen=True)
class Kind:
    """How one value is checked, and read from an environment string."""

    expected: str
    check: Callable[[Any], Any]  # returns the clean value or raises ValueError
    from_text: Callable[[str], Any] = str


def refuse(option: str, value: Any, kind: Kind) -> Any:
    """`kind.check(value)`, or InvalidOption naming the option and what was expected."""
    try:
        return kind.check(value)
    except (ValueError, TypeError):
        raise InvalidOption(option, value, f"expected {kind.expected}") from None


def _typed(*types: type) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        # bool is an int in Python; a config that says `port = true` is still wrong
        if (isinstance(v, bool) and bool not in types) or not isinstance(v, types):
            raise ValueError
        return v

    return check


def _at_least(low: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if _typed(int)(v) < low:
            raise ValueError
        return v

    return check


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(v: Any) -> float:
    """ "90s", "15m", "2h", "7d", or a number of seconds → seconds (float, ≥ 0)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        seconds = float(v)
    elif isinstance(v, str) and (m := _DURATION.match(v)):
        seconds = float(m[1]) * _UNIT[m[2]]
    else:
        raise ValueError
    if seconds < 0:
        raise ValueError
    return seconds


def _positive_seconds(v: Any) -> float:
    if (seconds := parse_duration(v)) <= 0:
        raise ValueError
    return seconds


def _seconds(v: Any) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
        raise ValueError
    return v


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNIT = {None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}


def parse_size(v: Any) -> int:
    """ "200MB", "1.5GiB", "64KiB", or a number of bytes → bytes (int, ≥ 0)."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str) and (m := _SIZE.match(v)):
        return int(float(m[1]) * _SIZE_UNIT[m[2].lower() if m[2] else None])
    raise ValueError


def _url(v: Any) -> str:
    """One URL, or a sentinel list joined by ';': scheme, host, port and database index checked."""
    if not isinstance(v, str):
        raise ValueError
    for one in v.split(";"):
        parts = urlsplit(one)
        if parts.scheme not in URL_SCHEMES:
            raise ValueError
        try:
            port = parts.port  # ValueError for a port that is not a number 0-65535
        except ValueError:
            raise ValueError(f"the port of {parts.hostname or 'the host'} is not a number 1-65535") from None
        if not parts.hostname:
            raise ValueError("no host")
        if port == 0:
            raise ValueError("port 0")
        db = parts.path.strip("/")
        if db and not (db.isdigit() and int(db) < 2**16):
            raise ValueError(f"database {db!r} is not a number (redis://host:6379/0)")
    return v


def _optional_url(v: Any) -> str:
    return "" if v == "" else _url(v)


def _str_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x for x in v):
        raise ValueError
    return tuple(v)


def _names(v: Any) -> tuple[str, ...]:
    names = _str_list(v)
    if not all(re.fullmatch(r"[A-Za-z_][\w.]*", n) for n in names):
        raise ValueError
    return names


def _priority(v: Any) -> int:
    if _typed(int)(v) not in PRIORITIES:
        raise ValueError
    return v


def _port(v: Any) -> int:
    if _typed(int)(v) not in range(1, 65536):
        raise ValueError
    return v


def _bind(v: Any) -> str:
    host, sep, port = _typed(str)(v).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError
    _port(int(port))
    return v


def _ratio(v: Any) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
        raise ValueError
    return float(v)


def _float_text(s: str) -> Any:
    try:
        return float(s)
    except ValueError:
        return s


def _optional_http_url(v: Any) -> str:
    if _typed(str)(v) and not re.match(r"^https?://[^/\s]+", v):
        raise ValueError
    return v


def choice(*allowed: str) -> Kind:
    def check(v: Any) -> str:
        if v not in allowed:
            raise ValueError
        return v

    return Kind(f"one of {', '.join(allowed)}", check)


def _bool_text(s: str) -> bool:
    low = s.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    return s  # type: ignore[return-value]  # left for check() to reject


def _split(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _number_text(s: str) -> Any:
    try:
        return int(s)
    except ValueError:
        return s


STR = Kind("a string", _typed(str))
BOOL = Kind("true or false", _typed(bool), _bool_text)
COUNT = Kind("a whole number ≥ 0", _at_least(0), _number_text)
POSITIVE = Kind("a whole number ≥ 1", _at_least(1), _number_text)
PORT = Kind("a port number 1-65535", _port, _number_text)
RATIO = Kind("a share from 0 to 1, such as 0.2 (0: off)", _ratio, _float_text)
HTTP_URL = Kind("empty or an http:// or https:// URL", _optional_http_url)
BIND = Kind('an address to listen on, "host:port" such as "127.0.0.1:9808"', _bind)
SIZE = Kind('a size ≥ 0 such as 200MB, "1GiB" or a number of bytes (0: no limit)', parse_size, _number_text)
DURATION = Kind('a duration ≥ 0 such as 30, "90s", "15m", "2h" or "7d"', parse_duration)
SECONDS = Kind("a number of seconds ≥ 0", _seconds)
TIMEOUT = Kind('seconds > 0, such as 1.5 or "2s"', _positive_seconds)
URL = Kind(f"a URL starting with {', '.join(s + '://' for s in URL_SCHEMES)}", _url)
OPTIONAL_URL = Kind(f"empty or {URL.expected}", _optional_url)
NAMES = Kind("a list of dotted names", _names, _split)
PRIORITY = Kind("a priority 0-9 (0 is the highest)", _priority, _number_text)


# ---------------------------------------------------------------- time bounds

Since = datetime | timedelta | str | float | None  # a time bound: a datetime, epoch seconds, or an age ("24h")


def epoch(when: Since, *, now: float, option: str = "since") -> float | None:
    """A time bound as seconds since the epoch: a datetime, a number, or an age like "24h"."""
    if when is None or (isinstance(when, (int, float)) and not isinstance(when, bool)):
        return when
    if isinstance(when, datetime):
        return when.timestamp()
    if isinstance(when, timedelta):
        return now - when.total_seconds()
    try:
        return now - parse_duration(when)
    except ValueError:
        raise InvalidOption(option, when, "expected an age such as '30m', '24h', '7d', a datetime or epoch seconds") from None
