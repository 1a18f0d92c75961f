"""The README's benchmark table is generated from bench/results.json (python -m bench.report --readme), never typed."""

from __future__ import annotations

import json

from bench import report


def test_the_readme_table_is_the_one_generated_from_the_results():
    results = json.loads(report.RESULTS.read_text())
    assert not results["quick"], "bench/results.json is a --quick run; run `bash run bench` for the README"
    assert report.readme_block(results) in report.README.read_text(), "README.md is stale: python -m bench.report --readme"


def test_every_row_has_a_target_and_says_whether_it_was_met():
    rows = json.loads(report.RESULTS.read_text())["rows"]
    assert {r["measure"] for r in rows} and all(r["target"] for r in rows)
    for r in rows:
        assert r["met"] in (True, False, None) and (r["met"] is None) == (r["target"] == "(reported)"), r
