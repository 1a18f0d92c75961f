"""monitoring/: the alert rules pass promtool's unit tests, and the Grafana dashboard's PromQL
parses and uses only metrics the exporter serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from taskkit import metrics

from .conftest import ROOT, wait_until

MONITORING = ROOT / "monitoring"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$queue": ".*"}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is needed: apt-get install prometheus (Debian ships it there)"
    return found


def test_alert_rules_pass_promtool_check_and_unit_tests(promtool):
    for argv in ([promtool, "check", "rules", "alerts.yml"], [promtool, "test", "rules", "alerts_test.yml"]):
        done = subprocess.run(argv, cwd=MONITORING, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads((MONITORING / "grafana" / "taskkit.json").read_text())
    out = [(p["title"], t["expr"]) for p in board["panels"] if p["type"] != "row" for t in p["targets"]]
    assert len(out) >= 17
    return out


def test_every_dashboard_query_parses(promtool, tmp_path):
    rules = []
    for i, (title, expr) in enumerate(dashboard_queries()):
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, f"{title}: a Grafana variable the test does not know: {expr}"
        rules.append({"record": f"dashboard:panel{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def served_names(app) -> set[str]:
    """Every sample name one scrape can carry (histograms' _bucket/_sum/_count, counters' _total)."""
    names = set()
    for line in metrics.exposition(app, per_level=True).splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name} | ({f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else set())
    return names


def test_the_dashboard_and_the_rules_use_only_metrics_the_exporter_serves(make_stack):
    stack = make_stack('[beat]\nmax_interval = "0.2s"\nlock_timeout = "1.5s"\n')
    stack.start_beat()  # so the beat families (tick age, holder) are in the scrape
    wait_until(lambda: "taskkit_beat_tick_age_seconds" in served_names(stack.app), 10, "beat to tick")
    served = served_names(stack.app)
    used = {m for _, expr in dashboard_queries() for m in re.findall(r"\btaskkit_[a-z_]+\b", expr)}
    used |= set(re.findall(r"\btaskkit_[a-z_]+\b", (MONITORING / "alerts.yml").read_text()))
    assert used - served == set(), f"not served: {sorted(used - served)}"
    assert len(used) >= 20


def test_rules_thresholds_match_the_alerts_defaults():
    from taskkit.config import AlertSettings

    text = Path(MONITORING / "alerts.yml").read_text()
    a = AlertSettings()
    for expected in (f">= {a.backlog}", f">= {a.oldest_waiting:g}", f">= {a.failure_rate:g}", f">= {a.min_runs}", f">= {a.beat_silent:g}",
                     f">= {a.redis_memory:g}", f">= {a.deadletters}"):  # fmt: skip
        assert expected in text, expected
    assert a.window == 900 and "[15m]" in text  # the failure-rate and dead-letter window
