"""taskkit.toml + TASKKIT_* environment → one validated, immutable Settings object.

Every value is checked when it is loaded; a bad one raises ConfigError naming the key,
the value and what was expected. Secrets (Redis passwords) may come from the environment
and are masked wherever settings are shown.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from difflib import get_close_matches
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from celery.app.defaults import DEFAULTS as CELERY_SETTINGS  # Celery's own table of setting names

from .errors import ConfigError, ScheduleError
from .kinds import BIND, BOOL, COUNT, DURATION, HTTP_URL, NAMES, OPTIONAL_URL, PORT, POSITIVE, PRIORITY, RATIO, SIZE, STR, URL, Kind, choice
from .schedule_spec import ScheduleSpec, parse_spec

ENV_PREFIX = "TASKKIT_"
CONFIG_ENV = "TASKKIT_CONFIG"  # path of taskkit.toml
PASSWORD_ENV = "TASKKIT_BROKER_PASSWORD"  # put into URLs that carry none (deploy env files)
SENTINEL_PASSWORD_ENV = "TASKKIT_SENTINEL_PASSWORD"  # the sentinels' own password (their requirepass), if they have one
DEFAULT_CONFIG_FILE = "taskkit.toml"
# TASKKIT_* variables that are not settings: read by their own parts, documented in the README
OTHER_ENV = {CONFIG_ENV, PASSWORD_ENV, SENTINEL_PASSWORD_ENV, "TASKKIT_LAB_TOKEN", "TASKKIT_METRICS_TOKEN", "TASKKIT_METRICS_BASIC_AUTH"}
OTHER_ENV_PREFIXES = ("TASKKIT_TESTBED_",)  # the deploy tests' testbed

# Built-in queues and the priority a message gets when the caller names none.
# Workers read priority levels before queues, so these also order work across queues.
BUILTIN_QUEUES = {"critical": 0, "high": 3, "default": 5, "low": 8}
DEFAULT_DEV_PORT = 6390  # not 6379: leave a system Redis on a laptop alone
MIN_LEASE = 2.0  # seconds; shorter, and a briefly busy worker could lose the messages it holds (taskkit.leases)


def setting(default: Any, kind: Kind) -> Any:
    return field(default=default, metadata={"kind": kind})


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class BrokerSettings:
    url: str = setting("", URL)  # empty: the local dev stack on 127.0.0.1:[dev] port
    result_url: str = setting("", OPTIONAL_URL)  # empty: same as url
    timeout: float = setting(3.0, DURATION)  # seconds to wait for Redis to connect or answer
    # Seconds before Redis hands an unacknowledged message to another worker. Must exceed
    # the longest task time limit and any countdown, or a task runs twice.
    visibility_timeout: float = setting(3600.0, DURATION)
    # Seconds a message's holder may go without renewing it before another worker puts it
    # back in its queue (taskkit.leases); 0 leaves that to visibility_timeout alone.
    lease: float = setting(10.0, DURATION)
    result_expires: float = setting(86400.0, DURATION)  # seconds results stay in Redis
    # High availability: with url a sentinel list ("sentinel://h1:26379;sentinel://h2:26379"),
    # the name the sentinels monitor the primary by.
    master_name: str = setting("", STR)
    # A submit returns once this many replicas have its message (Redis WAIT, one per publish or
    # bulk batch), so losing the primary right after loses nothing acknowledged. 0: off.
    replicas_ack: int = setting(0, COUNT)
    replicas_timeout: float = setting(1.0, DURATION)  # seconds a submit waits for them; less than timeout
    # TLS: rediss:// for one Redis; tls = true for a sentinel list (sentinels and Redis both).
    tls: bool = setting(False, BOOL)
    tls_ca_file: str = setting("", STR)  # PEM CA bundle that signed the servers' certificates (empty: the system's)
    tls_cert_file: str = setting("", STR)  # client certificate, when Redis asks for one (tls-auth-clients)
    tls_key_file: str = setting("", STR)  # its private key

    @property
    def sentinel(self) -> bool:
        return self.url.startswith("sentinel://")

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.url.startswith("rediss://")

    def __repr__(self) -> str:  # never show a password
        return f"BrokerSettings(url={mask_url(self.url)!r}, result_url={mask_url(self.result_url)!r})"


@dataclass(frozen=True)
class LimitSettings:
    time_limit: float = setting(1800.0, DURATION)  # hard kill after this many seconds
    soft_time_limit: float = setting(1500.0, DURATION)  # SoftTimeLimitExceeded raised in the task
    # A pool process is replaced after this many tasks, or after a task leaves it above this
    # resident memory, so a leaking task cannot grow a worker without bound (0: no limit).
    max_tasks_per_child: int = setting(1000, COUNT)
    max_memory_per_child: int = setting(200 * 1000**2, SIZE)  # bytes; "200MB" in taskkit.toml
    # Largest args + kwargs (as JSON) a submit may carry; larger ones are refused before anything
    # is queued (a few huge messages fill a noeviction Redis and stop every write). 0: no limit.
    max_message_bytes: int = setting(4 * 1000**2, SIZE)


@dataclass(frozen=True)
class RetrySettings:
    """When a task raises one of `on`, retry with exponential backoff and equal jitter."""

    on: tuple[str, ...] = setting(("ConnectionError", "TimeoutError"), NAMES)
    max_retries: int = setting(3, COUNT)
    backoff: float = setting(2.0, DURATION)  # first delay, seconds; doubles each attempt
    backoff_max: float = setting(600.0, DURATION)  # cap on one delay, seconds
    jitter: bool = setting(True, BOOL)  # delay in [d/2, d]: spreads a thundering herd


@dataclass(frozen=True)
class HistorySettings:
    enabled: bool = setting(True, BOOL)  # record every task run's lifecycle in Redis
    max_events: int = setting(1_000_000, COUNT)  # stream length cap (MAXLEN ~)
    max_age: float = setting(7 * 86400.0, DURATION)  # seconds (MINID)
    max_value_bytes: int = setting(4096, COUNT)  # args/kwargs longer than this are cut, marked


@dataclass(frozen=True)
class LogSettings:
    level: str = setting("INFO", choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    format: str = setting("text", choice("text", "json"))


@dataclass(frozen=True)
class DevSettings:
    port: int = setting(DEFAULT_DEV_PORT, PORT)
    dir: str = setting(".taskkit/dev", STR)  # data, logs and state of `taskkit dev`
    concurrency: int = setting(2, COUNT)


@dataclass(frozen=True)
class AlertSettings:
    """Health thresholds: `taskkit health` and the taskkit.ops.health task evaluate them (taskkit.alerts).

    0 turns a rule off. The same thresholds ship as Prometheus rules (monitoring/alerts.yml).
    """

    backlog: int = setting(1000, COUNT)  # messages waiting in one queue
    oldest_waiting: float = setting(600.0, DURATION)  # seconds the oldest waiting message of a queue has waited
    failure_rate: float = setting(0.2, RATIO)  # share of the runs that ended within `window` that failed
    min_runs: int = setting(20, COUNT)  # runs that must have ended within `window` for the failure rate to count
    window: float = setting(900.0, DURATION)  # seconds the failure rate and new dead letters look back
    no_consumer: bool = setting(True, BOOL)  # a queue with waiting messages and no live worker consuming it
    beat_silent: float = setting(60.0, DURATION)  # seconds without a beat tick, while schedules exist
    deadletters: int = setting(1, COUNT)  # new dead letters within `window`
    redis_memory: float = setting(0.9, RATIO)  # used / maxmemory (never fires without a maxmemory)
    webhook: str = setting("", HTTP_URL)  # POSTed a JSON body on every transition (TASKKIT_ALERTS_WEBHOOK keeps a token out of the file)
    keep: int = setting(10_000, POSITIVE)  # transitions kept in the alerts stream

    def __repr__(self) -> str:  # the webhook URL may carry a token
        return f"AlertSettings(webhook={'***' if self.webhook else ''!r}, ...)"


@dataclass(frozen=True)
class MetricsSettings:
    """The Prometheus exporter (`taskkit metrics serve`); its token comes from TASKKIT_METRICS_TOKEN or token_file."""

    bind: str = setting("127.0.0.1:9808", BIND)  # host:port it listens on
    token_file: str = setting("", STR)  # a file holding the bearer token (mode 0600), instead of the environment
    per_level: bool = setting(False, BOOL)  # also waiting messages per priority level (ten series a queue)


@dataclass(frozen=True)
class BeatSettings:
    """The beat process: how often it looks at Redis, and how soon a standby takes over."""

    # Longest sleep between ticks, seconds: a runtime edit takes effect within this.
    max_interval: float = setting(5.0, DURATION)
    # The active beat renews a Redis lock every tick; a standby beat takes over at most
    # lock_timeout + max_interval after the active one dies. Shorter: faster takeover, but
    # a beat that stalls longer than this (swap, a long GC, a slow Redis) loses the lock
    # and stands by while the other sends. At least 2 x max_interval.
    lock_timeout: float = setting(30.0, DURATION)


ROUTE_RETRY_KEYS = ("on", "max_retries", "backoff", "backoff_max", "jitter")


@dataclass(frozen=True)
class Route:
    """A routing rule: tasks whose name matches the glob get these options."""

    match: str
    queue: str | None = None
    priority: int | None = None
    retry: Mapping[str, Any] = field(default_factory=dict)  # subset of RetrySettings
    index: int = 0  # position in the file, shown by `routes explain`


@dataclass(frozen=True)
class Settings:
    key_prefix: str = setting("taskkit", STR)  # every Redis key taskkit owns starts with it
    imports: tuple[str, ...] = setting((), NAMES)  # the team's task modules
    eager: bool = setting(False, BOOL)  # run tasks in-process, no Redis: a laptop fallback
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    log: LogSettings = field(default_factory=LogSettings)
    dev: DevSettings = field(default_factory=DevSettings)
    beat: BeatSettings = field(default_factory=BeatSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    queues: Mapping[str, int] = field(default_factory=lambda: dict(BUILTIN_QUEUES))
    routes: tuple[Route, ...] = ()
    celery: Mapping[str, Any] = field(default_factory=dict)  # raw Celery settings, last word
    schedules: Mapping[str, ScheduleSpec] = field(default_factory=dict)  # [schedules.NAME]: synced by beat
    source: str = "defaults"
    password: str = field(default="", repr=False)  # TASKKIT_BROKER_PASSWORD of the environment loaded from; never shown
    sentinel_password: str = field(default="", repr=False)  # TASKKIT_SENTINEL_PASSWORD; never shown

    @property
    def broker_url(self) -> str:
        if self.broker.url:
            return with_password(self.broker.url, self.password)
        # the local stack: its password from the stack's directory, so nobody types it
        return with_password(f"redis://127.0.0.1:{self.dev.port}/0", self.password or dev_password(self.dev.dir))

    @property
    def result_url(self) -> str:
        return with_password(self.broker.result_url, self.password) if self.broker.result_url else self.broker_url

    def public(self) -> dict[str, Any]:
        """Plain data for display, passwords masked."""
        out = _as_dict(self)
        del out["password"], out["sentinel_password"]
        out["broker"].update(url=mask_url(self.broker_url), result_url=mask_url(self.result_url))
        out["routes"] = [{k: v for k, v in _as_dict(r).items() if v not in (None, {}) and k != "index"} for r in self.routes]
        return out

    def __repr__(self) -> str:
        return f"Settings(source={self.source!r}, broker={mask_url(self.broker_url)!r})"


SECTIONS = {f.name: f.type for f in fields(Settings)}
_SECTION_CLASSES = {
    "broker": BrokerSettings,
    "limits": LimitSettings,
    "retry": RetrySettings,
    "history": HistorySettings,
    "log": LogSettings,
    "dev": DevSettings,
    "beat": BeatSettings,
    "metrics": MetricsSettings,
    "alerts": AlertSettings,
}


def _as_dict(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _as_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _as_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [_as_dict(v) for v in obj]
    return obj


# ---------------------------------------------------------------- secrets


def mask_url(url: str) -> str:
    """Replace the password of every URL in `url` (sentinel lists use ';') with ***."""
    return ";".join(_mask_one(u) for u in url.split(";")) if url else url


def _mask_one(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


DEV_PASSWORD_FILE = "redis.password"  # in [dev] dir, mode 0600: written by `taskkit dev up`


def dev_password(directory: str | os.PathLike[str]) -> str | None:
    """The local stack's Redis password, if its directory has one this user can read."""
    try:
        return (Path(directory) / DEV_PASSWORD_FILE).read_text().strip() or None
    except OSError:
        return None


def with_password(url: str, password: str | None) -> str:
    """Add `password` (TASKKIT_BROKER_PASSWORD, or the local stack's) to a URL that has none: secrets stay out of files."""
    if not password or not url:
        return url
    out = []
    for u in url.split(";"):
        parts = urlsplit(u)
        if parts.password is None:
            host = parts.netloc.rpartition("@")[2]
            u = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{quote(password, safe='')}@{host}"))
        out.append(u)
    return ";".join(out)


# ---------------------------------------------------------------- loading


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read taskkit.toml (path, $TASKKIT_CONFIG, ./taskkit.toml, or none) and TASKKIT_* overrides."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "defaults"
    path = path or env.get(CONFIG_ENV) or (DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).is_file() else None)
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(CONFIG_ENV, str(path), "an existing taskkit.toml") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("taskkit.toml", str(path), f"valid TOML ({exc})") from None
        source = str(path)
    return _build(data, env, source)


def _build(data: dict[str, Any], env: Mapping[str, str], source: str) -> Settings:
    _check_env_names(env)
    for key in data:
        if key not in SECTIONS or key == "source":
            raise ConfigError(key, data[key], f"one of {', '.join(k for k in SECTIONS if k != 'source')}", source=source)

    def section(cls: type, raw: Any, prefix: str) -> Any:
        if not isinstance(raw, dict):
            raise ConfigError(prefix.rstrip("."), raw, "a table", source=source)
        names = {f.name: f for f in fields(cls) if "kind" in f.metadata}
        values = {}
        for key, value in raw.items():
            if key not in names:
                raise ConfigError(prefix + key, value, f"one of {', '.join(names)}", source=source)
            values[key] = _check(prefix + key, value, names[key].metadata["kind"], source)
        for name, f in names.items():  # TASKKIT_BROKER_URL, TASKKIT_RETRY_MAX_RETRIES, …
            var = ENV_PREFIX + (prefix + name).replace(".", "_").upper()
            if var in env:
                kind = f.metadata["kind"]
                values[name] = _check(prefix + name, kind.from_text(env[var]), kind, var)
        return cls(**values)

    top = {k: v for k, v in data.items() if k in ("key_prefix", "imports", "eager")}
    settings = section(Settings, top, "")
    sections = {name: section(cls, data.get(name, {}), name + ".") for name, cls in _SECTION_CLASSES.items()}
    queues = _queues(data.get("queues", {}), source)
    routes = _routes(data.get("routes", []), queues, source)
    celery = _celery(data.get("celery", {}), source)
    schedules = _schedules(data.get("schedules", {}), queues, source)
    settings = replace(settings, **sections, queues=queues, routes=routes, celery=celery, schedules=schedules, source=source,
                       password=env.get(PASSWORD_ENV, ""), sentinel_password=env.get(SENTINEL_PASSWORD_ENV, ""))  # fmt: skip
    _check_broker(settings)
    _check_limits(settings)
    _check_beat(settings)
    return settings


def env_names() -> list[str]:
    """Every TASKKIT_* variable that sets a setting: TASKKIT_<SECTION>_<KEY>, and the top-level ones."""
    names = [ENV_PREFIX + f.name.upper() for f in fields(Settings) if "kind" in f.metadata]
    for section, cls in _SECTION_CLASSES.items():
        names += [f"{ENV_PREFIX}{section.upper()}_{f.name.upper()}" for f in fields(cls) if "kind" in f.metadata]
    return names


def _check_env_names(env: Mapping[str, str]) -> None:
    """A misspelt TASKKIT_* variable fails at load instead of being silently ignored."""
    known = {*env_names(), *OTHER_ENV}
    for var in env:
        if var.startswith(ENV_PREFIX) and var not in known and not var.startswith(OTHER_ENV_PREFIXES):
            close = get_close_matches(var, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            value = env[var]
            shown = mask_url(value) if "://" in value else "…"  # the value of an unknown variable may be a secret
            raise ConfigError(var, shown, f"a TASKKIT_* setting (`taskkit config show` lists them){hint}", source="environment")


def _check(key: str, value: Any, kind: Kind, source: str) -> Any:
    try:
        return kind.check(value)
    except (ValueError, TypeError) as exc:
        shown = mask_url(value) if isinstance(value, str) and "://" in value else value  # never a password in an error
        reason = f" ({exc})" if str(exc) else ""
        raise ConfigError(key, shown, kind.expected + reason, source=source) from None


def _queues(raw: Any, source: str) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise ConfigError("queues", raw, "a table of [queues.NAME] tables", source=source)
    queues = dict(BUILTIN_QUEUES)
    for name, spec in raw.items():
        if not re.fullmatch(r"[\w.-]+", name):
            raise ConfigError(f"queues.{name}", name, "a queue name of letters, digits, _ . -", source=source)
        if not isinstance(spec, dict) or set(spec) - {"priority"}:
            raise ConfigError(f"queues.{name}", spec, "a table with only `priority`", source=source)
        queues[name] = _check(f"queues.{name}.priority", spec.get("priority", queues.get(name, 5)), PRIORITY, source)
    return queues


def _routes(raw: Any, queues: Mapping[str, int], source: str) -> tuple[Route, ...]:
    if not isinstance(raw, list):
        raise ConfigError("routes", raw, "an array of [[routes]] tables", source=source)
    retry_kinds = {f.name: f.metadata["kind"] for f in fields(RetrySettings)}
    routes = []
    for i, rule in enumerate(raw):
        key = f"routes[{i}]"
        if not isinstance(rule, dict) or not isinstance(rule.get("match"), str) or not rule["match"]:
            raise ConfigError(f"{key}.match", rule, "a task-name glob such as 'reports.*'", source=source)
        unknown = set(rule) - {"match", "queue", "priority", *ROUTE_RETRY_KEYS}
        if unknown:
            k = sorted(unknown)[0]
            raise ConfigError(f"{key}.{k}", rule[k], f"one of match, queue, priority, {', '.join(ROUTE_RETRY_KEYS)}", source=source)
        queue = rule.get("queue")
        if queue is not None and queue not in queues:
            raise ConfigError(f"{key}.queue", queue, f"a declared queue ({', '.join(queues)})", source=source)
        priority = rule.get("priority")
        if priority is not None:
            _check(f"{key}.priority", priority, PRIORITY, source)
        retry = {k: _check(f"{key}.{k}", rule[k], retry_kinds[k], source) for k in ROUTE_RETRY_KEYS if k in rule}
        routes.append(Route(match=rule["match"], queue=queue, priority=priority, retry=retry, index=i))
    return tuple(routes)


def _celery(raw: Any, source: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError("celery", raw, "a table of Celery settings", source=source)
    for key in raw:
        if key not in CELERY_SETTINGS:
            raise ConfigError(f"celery.{key}", raw[key], "a Celery setting name (lowercase, e.g. worker_concurrency)", source=source)
    return dict(raw)


def _schedules(raw: Any, queues: Mapping[str, int], source: str) -> dict[str, ScheduleSpec]:
    """[schedules.NAME] tables, checked like runtime schedules (task names are checked by beat)."""
    if not isinstance(raw, dict):
        raise ConfigError("schedules", raw, "a table of [schedules.NAME] tables", source=source)
    out = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"schedules.{name}", spec, "a table with task and one of every, cron or at", source=source)
        try:
            # past_ok: a one-off stays valid in the file after it has run
            out[name] = parse_spec(name, spec, past_ok=True)
        except ScheduleError as exc:
            raise ConfigError(f"schedules.{name}.{exc.field}", exc.value, exc.expected, source=source) from None
        if out[name].queue is not None and out[name].queue not in queues:
            raise ConfigError(f"schedules.{name}.queue", out[name].queue, f"a declared queue ({', '.join(queues)})", source=source)
    return out


def _check_broker(s: Settings) -> None:
    """Sentinel and TLS settings that only make sense together."""
    b = s.broker

    def refuse(key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"broker.{key}", mask_url(value) if isinstance(value, str) else value, expected, source=s.source)

    for key in ("url", "result_url"):
        url = getattr(b, key)
        if ";" in url and {u.partition("://")[0] for u in url.split(";")} != {"sentinel"}:
            raise refuse(key, url, "one redis:// or rediss:// URL, or a list of sentinel:// URLs joined by ';'")
    if b.result_url and b.result_url.startswith("sentinel://") != b.sentinel:
        raise refuse("result_url", b.result_url, "the same kind of URL as broker.url (both sentinel lists or neither)")
    if b.sentinel != bool(b.master_name):
        expected = (
            "the name the sentinels know the primary by (SENTINEL MASTERS)" if b.sentinel else "empty unless broker.url is a sentinel list"
        )
        raise refuse("master_name", b.master_name, expected)
    if b.replicas_ack and not 0 < b.replicas_timeout < b.timeout:
        raise refuse(
            "replicas_timeout", b.replicas_timeout, f"more than 0 and less than broker.timeout ({b.timeout:g}s), which cuts the wait"
        )
    if b.tls and not b.sentinel:
        raise refuse("tls", True, "false unless broker.url is a sentinel list; for one Redis write rediss:// in broker.url")
    files = {k: getattr(b, k) for k in ("tls_ca_file", "tls_cert_file", "tls_key_file") if getattr(b, k)}
    for key, path in files.items():
        if not b.uses_tls:
            raise refuse(key, path, "empty unless TLS is on (a rediss:// url, or broker.tls = true with a sentinel list)")
        if not (Path(path).is_file() and os.access(path, os.R_OK)):
            raise refuse(key, path, "a PEM file this user can read")
    if bool(b.tls_cert_file) != bool(b.tls_key_file):
        raise refuse("tls_key_file" if b.tls_cert_file else "tls_cert_file", "", "set with the other of tls_cert_file and tls_key_file")


def _check_beat(s: Settings) -> None:
    if s.beat.max_interval <= 0:
        raise ConfigError("beat.max_interval", s.beat.max_interval, "a duration > 0", source=s.source)
    if s.beat.lock_timeout < 2 * s.beat.max_interval:
        raise ConfigError(
            "beat.lock_timeout",
            s.beat.lock_timeout,
            f"at least 2 x beat.max_interval ({2 * s.beat.max_interval:g}s), or the lock lapses between ticks",
            source=s.source,
        )


def _check_limits(s: Settings) -> None:
    """Cross-field rules that keep at-least-once delivery from turning into double runs."""
    vt = s.broker.visibility_timeout
    if s.broker.lease and not MIN_LEASE <= s.broker.lease < vt:
        raise ConfigError(
            "broker.lease", s.broker.lease, f"0 (off) or {MIN_LEASE:g}s up to broker.visibility_timeout ({vt:g}s)", source=s.source
        )
    if s.limits.soft_time_limit > s.limits.time_limit:
        raise ConfigError(
            "limits.soft_time_limit", s.limits.soft_time_limit, f"at most limits.time_limit ({s.limits.time_limit:g}s)", source=s.source
        )
    if s.limits.time_limit >= vt:
        raise ConfigError(
            "limits.time_limit",
            s.limits.time_limit,
            f"less than broker.visibility_timeout ({vt:g}s), or a running task is redelivered",
            source=s.source,
        )
    caps = [("retry.backoff_max", s.retry.backoff_max)]
    caps += [(f"routes[{r.index}].backoff_max", r.retry["backoff_max"]) for r in s.routes if "backoff_max" in r.retry]
    for key, cap in caps:
        if cap >= vt:
            raise ConfigError(key, cap, f"less than broker.visibility_timeout ({vt:g}s), or a retry may run twice", source=s.source)
