"""Every benchmark in one table: baseline, taskkit, ratio, target, met — printed and kept as JSON.

Runs each bench module's `measure()` one after another (never side by side: two cores),
prints one table and writes it to bench/results.json; `--readme` rewrites README.md's
benchmark table from that file (the README's figures are generated, never typed).

    python -m bench.report [--quick] [--only NAME ...]     # bash run bench
    python -m bench.report --readme                         # README table from bench/results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
README = ROOT / "README.md"
BEGIN, END = "<!-- bench:table (python -m bench.report --readme) -->", "<!-- bench:end -->"

# Sizes: as the targets are stated, and --quick for a smoke run.
FULL = {
    "throughput": (4000, 5), "bulk": (100_000, 2_000, 3), "history": (1_000_000, 3), "latency": (300, 3), "schedules": (1_000_000,),
    "replicas": (2_000, 50_000, 3),
}  # fmt: skip
QUICK = {
    "throughput": (1000, 3), "bulk": (20_000, 500, 3), "history": (100_000, 2), "latency": (100, 2), "schedules": (50_000,),
    "replicas": (500, 10_000, 2),
}  # fmt: skip


def row(
    measure: str, baseline: float | None, taskkit: float, unit: str, target: str, met: bool | None, ratio: float | None = None
) -> dict[str, Any]:
    if ratio is None and baseline:
        ratio = taskkit / baseline
    return {"measure": measure, "baseline": baseline, "taskkit": taskkit, "unit": unit, "ratio": ratio, "target": target, "met": met}


def throughput(n: int, rounds: int) -> list[dict[str, Any]]:
    from bench import throughput

    m = throughput.measure(n, rounds, 2)
    plain, tk = m["plain"], m["taskkit"]
    return [
        row("publish, one apply_async at a time", plain["publish"], tk["publish"], "tasks/s", ">= x1.0", tk["publish"] >= plain["publish"]),
        row("drain, prefork -c 2", plain["drain"], tk["drain"], "tasks/s", ">= x0.95", tk["drain"] >= 0.95 * plain["drain"]),
    ]


def bulk(n: int, loop: int, rounds: int) -> list[dict[str, Any]]:
    from bench import bulk

    m = bulk.measure(n, loop, rounds)
    met = m["bulk"] >= 30_000 and m["bulk"] >= 10 * m["loop"]
    return [row(f"bulk submit of {n:,} tasks (baseline: a submit loop)", m["loop"], m["bulk"], "tasks/s", ">= 30,000/s and >= x10", met)]


def history(n: int, rounds: int) -> list[dict[str, Any]]:
    from bench import history_load

    m = history_load.measure(n, rounds)
    return [
        row(f"{n:,} events -> events() DataFrame", m["baseline_s"], m["events_s"], "s", "<= 1.0 s", m["events_s"] <= 1.0),
        row(f"{n:,} events -> runs()", None, m["runs_s"], "s", "<= 1.5 s", m["runs_s"] <= 1.5),
        row("peak memory of those reads", None, m["peak_mb"], "MB", "(reported)", None),
    ]


def latency(n: int, rounds: int) -> list[dict[str, Any]]:
    from bench import latency

    m = latency.measure(n, rounds)["results"]
    out = []
    for c in (1, 2):
        plain, tk = m[c]["plain, taskkit's settings"], m[c]["taskkit as shipped"]
        for what, key in (("enqueue -> start", "start"), ("round trip", "trip")):
            for q in ("p50", "p99"):
                value = tk[f"{key}_{q}"]
                target, met = ("<= 2.0 ms", value <= 2.0) if (key, q) == ("start", "p50") else ("(reported)", None)
                out.append(
                    row(f"{what} {q}, prefork -c {c} (baseline: Celery, same settings)", plain[f"{key}_{q}"], value, "ms", target, met)
                )
        defaults = m[c]["celery defaults"]["start_p50"]
        out.append(
            row(
                f"enqueue -> start p50, prefork -c {c} (baseline: Celery's own defaults)",
                defaults,
                tk["start_p50"],
                "ms",
                "(reported)",
                None,
            )
        )
    return out


def schedules(n: int) -> list[dict[str, Any]]:
    from bench import schedules

    m = schedules.measure(n, baseline_max=100_000)  # Celery's scheduler at 1M: minutes and 3.5 GB (Schedules)
    base = m.get("celery") or {}
    tk = m["taskkit"]
    return [
        row(f"beat tick p50, {n:,} schedules", base.get("tick_p50_ms"), tk["tick_p50_ms"], "ms", "< 10 ms", tk["tick_p50_ms"] < 10),
        row(f"send lag p99, {n:,} schedules", base.get("lag_p99_ms"), tk["lag_p99_ms"], "ms", "< 100 ms", tk["lag_p99_ms"] < 100),
    ]


def replicas(loop: int, n: int, rounds: int) -> list[dict[str, Any]]:
    from bench import replicas

    m = replicas.measure(loop, n, rounds)
    return [
        row("submit with replicas_ack = 1 (baseline: 0)", m["submit ack=0"], m["submit ack=1"], "tasks/s", "(reported)", None),
        row(f"submit_many of {n:,} with replicas_ack = 1 (baseline: 0)", m["bulk ack=0"], m["bulk ack=1"], "tasks/s", "(reported)", None),
    ]


BENCHES: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "throughput": throughput, "bulk": bulk, "history": history, "latency": latency, "schedules": schedules, "replicas": replicas,
}  # fmt: skip


def number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("tasks/s", "MB"):
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (what the terminal and the README show)."""
    lines = ["| measure | baseline | taskkit | unit | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "—" if r["ratio"] is None else f"x{r['ratio']:.2f}"
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        lines.append(
            f"| {r['measure']} | {number(r['baseline'], r['unit'])} | {number(r['taskkit'], r['unit'])} | {r['unit']} | {ratio} | {r['target']} | {met} |"
        )
    return "\n".join(lines)


def readme_block(results: dict[str, Any]) -> str:
    """The README's benchmark section body, from bench/results.json."""
    when = results["measured_at"][:10]
    note = f"Measured {when} on {results['machine']} by `bash run bench` (medians; baselines side by side in the same run)."
    return f"{BEGIN}\n{note}\n\n{table(results['rows'])}\n{END}"


def write_readme(results: dict[str, Any]) -> None:
    text = README.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    README.write_text(text[:start] + readme_block(results) + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run (not for the README)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run these, keep the other rows of results.json")
    parser.add_argument("--readme", action="store_true", help="only rewrite README.md's table from bench/results.json")
    args = parser.parse_args()
    if args.readme:
        write_readme(json.loads(RESULTS.read_text()))
        return
    sizes = QUICK if args.quick else FULL
    old = json.loads(RESULTS.read_text()) if args.only and RESULTS.exists() else {"groups": {}}
    groups: dict[str, Any] = dict(old["groups"])
    for name in args.only or BENCHES:
        start = time.monotonic()
        print(f"==> {name}", flush=True)
        groups[name] = BENCHES[name](*sizes[name])
        print(f"==> {name}: done in {time.monotonic() - start:.0f}s", flush=True)
    rows = [r for name in BENCHES for r in groups.get(name, [])]
    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick,
        "machine": f"{_cores()} cores, Python {platform.python_version()}", "groups": groups, "rows": rows,
    }  # fmt: skip
    print("\n" + table(rows))
    out = RESULTS.with_name("results-quick.json") if args.quick else RESULTS
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten to {out.relative_to(ROOT)}" + ("" if args.quick else "; python -m bench.report --readme updates README.md"))


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
