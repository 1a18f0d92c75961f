"""taskkit.toml + TASKKIT_* → Settings: bad values fail at load, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskkit.config import ConfigError, load_settings, mask_url


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    path = tmp_path / "taskkit.toml"
    path.write_text(text)
    return load_settings(path, env=env or {})


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./taskkit.toml here
    s = load_settings(env={})
    assert s.source == "defaults"
    assert s.broker_url == "redis://127.0.0.1:6390/0"  # the dev stack
    assert s.queues == {"critical": 0, "high": 3, "default": 5, "low": 8}
    assert s.limits.time_limit < s.broker.visibility_timeout


def test_example_file_at_the_repo_root_loads():
    root = Path(__file__).resolve().parent.parent
    s = load_settings(root / "taskkit.toml", env={})
    assert "reports" in s.queues and s.routes


def test_values_and_durations(tmp_path):
    s = load(
        tmp_path,
        """
key_prefix = "team"
[broker]
url = "rediss://redis.internal:6380/2"
visibility_timeout = "2h"
[limits]
time_limit = "15m"
soft_time_limit = 600
[queues.reports]
priority = 6
[[routes]]
match = "reports.*"
queue = "reports"
max_retries = 5
""",
    )
    assert s.key_prefix == "team"
    assert s.broker.visibility_timeout == 7200 and s.limits.time_limit == 900
    assert s.queues["reports"] == 6 and s.queues["default"] == 5
    assert s.routes[0].retry == {"max_retries": 5}


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("colour = 1", "colour", "one of"),
        ("[broker]\nurll = 'redis://x'", "broker.urll", "one of url"),
        ("[broker]\nurl = 'http://x'", "broker.url", "redis://"),
        ("[broker]\nurl = 42", "broker.url", "redis://"),
        ("[limits]\ntime_limit = -5", "limits.time_limit", "duration ≥ 0"),
        ("[limits]\ntime_limit = 'soon'", "limits.time_limit", "duration"),
        ("[retry]\nmax_retries = 'three'", "retry.max_retries", "whole number"),
        ("[retry]\nmax_retries = -1", "retry.max_retries", "whole number"),
        ("[retry]\njitter = 'yes'", "retry.jitter", "true or false"),
        ("[log]\nformat = 'xml'", "log.format", "text, json"),
        ("[dev]\nport = 70000", "dev.port", "port"),
        ("[queues.fast]\npriority = 12", "queues.fast.priority", "0-9"),
        ("[[routes]]\nmatch = 'a.*'\nqueue = 'nowhere'", "routes[0].queue", "declared queue"),
        ("[[routes]]\nqueue = 'high'", "routes[0].match", "glob"),
        ("[[routes]]\nmatch = 'a.*'\nspeed = 3", "routes[0].speed", "one of"),
        ("[celery]\nworker_concurency = 3", "celery.worker_concurency", "Celery setting"),
        ("[limits]\ntime_limit = '2h'", "limits.time_limit", "visibility_timeout"),
        ("[limits]\nsoft_time_limit = '40m'", "limits.soft_time_limit", "at most limits.time_limit"),
        ("[retry]\nbackoff_max = '2h'", "retry.backoff_max", "visibility_timeout"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, key, expected):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert err.value.key == key
    assert expected in str(err.value)
    assert str(tmp_path) in str(err.value)  # says which file


def test_environment_overrides_and_its_errors(tmp_path):
    s = load(
        tmp_path, "[retry]\nmax_retries = 1", env={"TASKKIT_RETRY_MAX_RETRIES": "7", "TASKKIT_EAGER": "true", "TASKKIT_IMPORTS": "a.b, c"}
    )
    assert s.retry.max_retries == 7 and s.eager is True and s.imports == ("a.b", "c")
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "", env={"TASKKIT_BROKER_TIMEOUT": "-1s"})
    assert err.value.key == "broker.timeout" and "TASKKIT_BROKER_TIMEOUT" in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match=r"an existing taskkit\.toml"):
        load_settings(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="valid TOML"):
        load(tmp_path, "[broker\nurl=")


def test_passwords_never_shown(tmp_path, monkeypatch):
    s = load(tmp_path, "[broker]\nurl = 'redis://:hunter2@h:6379/0'\nresult_url = 'redis://app:hunter2@h:6379/1'")
    for shown in (repr(s), repr(s.broker), str(s.public())):
        assert "hunter2" not in shown and "***" in shown
    # a password from the environment goes into URLs that carry none
    s = load(tmp_path, "[broker]\nurl = 'redis://worker@h:6379/0'", env={"TASKKIT_BROKER_PASSWORD": "s3cret"})
    assert s.broker_url == "redis://worker:s3cret@h:6379/0"
    assert "s3cret" not in str(s.public()) and "s3cret" not in repr(s)


def test_mask_url_handles_sentinel_lists():
    assert mask_url("sentinel://:pw@a:26379;sentinel://:pw@b:26379") == "sentinel://:***@a:26379;sentinel://:***@b:26379"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"


BAD_URLS = [
    ("redis://:hunter2@127.0.0.1:abc/0", "the port of 127.0.0.1 is not a number 1-65535"),
    ("redis://:hunter2@127.0.0.1:70000/0", "is not a number 1-65535"),
    ("redis://:hunter2@127.0.0.1:6379/x1", "database 'x1' is not a number"),
    ("redis://:hunter2@:6379/0", "no host"),
    ("amqp://guest:hunter2@host//", "a URL starting with redis://"),
    ("sentinel://:hunter2@a:26379;sentinel://:hunter2@b:port", "the port of b"),
]


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_bad_url_parts_fail_at_load_with_the_password_masked(tmp_path, url, reason):
    from click.testing import CliRunner

    from taskkit.cli import main

    for key, where in (("url", "TASKKIT_BROKER_URL"), ("result_url", "TASKKIT_BROKER_RESULT_URL")):
        with pytest.raises(ConfigError) as from_file:
            load(tmp_path, f"[broker]\n{key} = '{url}'")
        with pytest.raises(ConfigError) as from_env:
            load(tmp_path, "", env={where: url})
        for exc in (from_file.value, from_env.value):
            assert reason in str(exc) and "hunter2" not in str(exc) and ":***@" in str(exc) and "\n" not in str(exc)
        out = CliRunner().invoke(main, ["config", "show"], env={where: url})
        assert out.exit_code == 1 and reason in out.output and "hunter2" not in out.output


def test_a_misspelt_variable_fails_with_the_closest_name(tmp_path):
    with pytest.raises(ConfigError, match="did you mean TASKKIT_BROKER_URL") as exc:
        load(tmp_path, "", env={"TASKKIT_BROKR_URL": "redis://:hunter2@h:6379/0"})
    assert "hunter2" not in str(exc.value)
    with pytest.raises(ConfigError, match="TASKKIT_RETRY_MAX_RETRIES"):
        load(tmp_path, "", env={"TASKKIT_RETRY_MAXRETRIES": "4"})
    # the documented variables that are not settings are fine
    ok = {"TASKKIT_CONFIG": str(tmp_path / "taskkit.toml"), "TASKKIT_BROKER_PASSWORD": "x", "TASKKIT_LAB_TOKEN": "t"}
    assert load(tmp_path, "", env={**ok, "TASKKIT_TESTBED_CACHE": "/tmp/x", "TASKKIT_HISTORY_MAX_EVENTS": "10"}).history.max_events == 10


def test_a_database_the_server_lacks_is_one_line(redis_port):
    import taskkit

    app = taskkit.create_app(load_settings(env={"TASKKIT_BROKER_URL": f"redis://127.0.0.1:{redis_port}/4000"}))
    with pytest.raises(taskkit.BrokerUnavailable, match="DB index is out of range"):
        taskkit.submit("taskkit.ops.health", app=app)
    with pytest.raises(taskkit.BrokerUnavailable, match="DB index is out of range"):
        taskkit.queue_depths(app=app)


# ---------------------------------------------------------------- sentinel and TLS: one setting for every client

SENTINELS = "sentinel://taskkit@a:26379/2;sentinel://taskkit@b:26380/2"


def test_one_sentinel_setting_configures_broker_results_and_redbeat(tmp_path):
    from taskkit.app import celery_config

    env = {"TASKKIT_BROKER_PASSWORD": "hunter2", "TASKKIT_SENTINEL_PASSWORD": "sentinel-pw"}
    s = load(tmp_path, f"[broker]\nurl = '{SENTINELS}'\nmaster_name = 'tk'\ntimeout = 2", env=env)
    conf = celery_config(s)
    assert conf["broker_url"] == conf["result_backend"] == "sentinel://taskkit:hunter2@a:26379/2;sentinel://taskkit:hunter2@b:26380/2"
    wanted = {"master_name": "tk", "sentinel_kwargs": {"password": "sentinel-pw", "socket_connect_timeout": 2.0, "socket_timeout": 2.0}}
    for options in (conf["broker_transport_options"], conf["result_backend_transport_options"]):
        assert {k: options[k] for k in wanted} == wanted
    assert conf["broker_transport_options"]["visibility_timeout"] == s.broker.visibility_timeout  # merged, not replaced
    assert conf["redbeat_redis_url"] == "redis-sentinel://"  # what redbeat understands (sibson/redbeat#199)
    assert conf["redbeat_redis_options"] == {
        "sentinels": [("a", 26379), ("b", 26380)],
        "service_name": "tk",
        "username": "taskkit",
        "password": "hunter2",
        "db": 2,
        "socket_timeout": 2.0,
        "sentinel_kwargs": wanted["sentinel_kwargs"],
    }
    shown = str(s.public()) + repr(s)
    assert "hunter2" not in shown and "sentinel-pw" not in shown


def test_tls_settings_reach_every_client(tmp_path):
    import ssl

    from taskkit.app import celery_config

    ca = tmp_path / "ca.crt"
    ca.write_text("pem")
    s = load(tmp_path, f"[broker]\nurl = 'rediss://h:6380/0'\ntls_ca_file = '{ca}'")
    conf = celery_config(s)
    tls = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(ca)}
    assert conf["broker_use_ssl"] == conf["redis_backend_use_ssl"] == conf["redbeat_redis_use_ssl"] == tls
    s = load(tmp_path, f"[broker]\nurl = '{SENTINELS}'\nmaster_name = 'tk'\ntls = true\ntls_ca_file = '{ca}'")
    conf = celery_config(s)
    assert conf["broker_use_ssl"] == tls  # kombu and Celery's backend use SSL connections to the primary
    assert conf["broker_transport_options"]["sentinel_kwargs"] | tls == conf["broker_transport_options"]["sentinel_kwargs"]
    assert conf["broker_transport_options"]["sentinel_kwargs"]["ssl"] is True  # and to the sentinels


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        (f"url = '{SENTINELS}'", "broker.master_name", "the name the sentinels know the primary by"),
        ("url = 'redis://h:6379/0'\nmaster_name = 'tk'", "broker.master_name", "empty unless broker.url is a sentinel list"),
        ("url = 'redis://a:6379/0;sentinel://b:26379'", "broker.url", "a list of sentinel:// URLs joined by ';'"),
        (f"url = '{SENTINELS}'\nmaster_name = 'tk'\nresult_url = 'redis://h:6379/1'", "broker.result_url", "the same kind of URL"),
        ("url = 'redis://h:6379/0'\ntls = true", "broker.tls", "write rediss:// in broker.url"),
        ("url = 'redis://h:6379/0'\ntls_ca_file = '/etc/ssl/certs/ca-certificates.crt'", "broker.tls_ca_file", "empty unless TLS is on"),
        ("url = 'rediss://h:6379/0'\ntls_ca_file = '/nonexistent.pem'", "broker.tls_ca_file", "a PEM file this user can read"),
        ("url = 'rediss://h:6379/0'\ntls_cert_file = '/etc/hostname'", "broker.tls_key_file", "set with the other"),
        ("replicas_ack = -1", "broker.replicas_ack", "a whole number"),
        ("replicas_ack = 1\nreplicas_timeout = 5", "broker.replicas_timeout", "less than broker.timeout (3s)"),
    ],
)
def test_sentinel_and_tls_mistakes_fail_at_load(tmp_path, text, key, expected):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, f"[broker]\n{text}")
    assert exc.value.key == key and expected in str(exc.value), str(exc.value)
