"""The README's benchmark table is generated from bench/results.json (python -m bench.report --readme), never typed."""

from __future__ import annotations

import json

from bench import report


def test_the_readme_table_is_the_one_generated_from_the_results():
    results = json.loads(report.RESULTS.read_text())
    assert not results["quick"], "bench/results.json is a --quick run; run `bash run bench` for the README"
    assert report.readme_block(results) in report.README.read_text(), "README.md is stale: python -m bench.report --readme"


def _met(r: dict) -> bool | None:
    """The target read back from its words: ">= x0.95", "<= 1.0 s", "< 10 ms", ">= 30,000/s and >= x10"."""
    if r["target"] == "(reported)":
        return None
    checks = []
    for part in r["target"].split(" and "):
        op, value = part.split()[0], part.split()[1].replace(",", "").removesuffix("/s")
        measured = r["ratio"] if value.startswith("x") else r["taskkit"]
        limit = float(value.removeprefix("x"))
        checks.append({">=": measured >= limit, "<=": measured <= limit, "<": measured < limit}[op])
    return all(checks)


def test_every_row_says_whether_its_target_was_met_and_is_right():
    rows = json.loads(report.RESULTS.read_text())["rows"]
    assert {r["measure"] for r in rows} and all(r["target"] for r in rows)
    for r in rows:
        assert r["met"] is _met(r), r
