"""A sample research workload: a stochastic SIR epidemic model swept over (beta, gamma).

Each grid point is one task that simulates many epidemics at once with numpy and reports
progress; a chord gathers the points (its header published in batches, `taskkit.bulk.submit_chord`)
and `sweep_frame` turns them into a DataFrame.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

from celery import shared_task
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult

from ..app import TaskkitApp, get_app
from ..bulk import submit_chord

DEFAULT_BETAS = (0.15, 0.2, 0.25, 0.3, 0.4, 0.5)  # infections per infectious person per day
DEFAULT_GAMMAS = (0.1, 0.2)  # recoveries per infectious person per day
PROGRESS_EVERY = 20  # days between progress reports


@shared_task(name="taskkit.science.simulate", bind=True)
def simulate(
    self: Any,
    beta: float,
    gamma: float,
    population: int = 10_000,
    days: int = 160,
    replicates: int = 200,
    initial: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Chain-binomial SIR: `replicates` epidemics advanced together, one day per step."""
    import numpy as np  # loaded where the sample runs, not by every worker that imports the module

    rng = np.random.default_rng(seed)
    s = np.full(replicates, population - initial)
    i = np.full(replicates, initial)
    peak = i.copy()
    peak_day = np.zeros(replicates, dtype=int)
    recover = 1.0 - np.exp(-gamma)
    for day in range(1, days + 1):
        infected = rng.binomial(s, 1.0 - np.exp(-beta * i / population))
        recovered = rng.binomial(i, recover)
        s, i = s - infected, i + infected - recovered
        higher = i > peak
        peak, peak_day = np.where(higher, i, peak), np.where(higher, day, peak_day)
        if day % PROGRESS_EVERY == 0:
            self.progress(day, days, beta=beta, gamma=gamma)
    attack = (population - s) / population
    return {
        "beta": beta,
        "gamma": gamma,
        "r0": round(beta / gamma, 3),
        "attack_rate": float(attack.mean()),
        "attack_p05": float(np.quantile(attack, 0.05)),
        "attack_p95": float(np.quantile(attack, 0.95)),
        "peak_infected": float(peak.mean() / population),
        "peak_day": float(peak_day.mean()),
        "replicates": replicates,
    }


@shared_task(name="taskkit.science.collect")
def collect(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chord callback: the grid points in (beta, gamma) order."""
    return sorted(rows, key=lambda r: (r["beta"], r["gamma"]))


def start_sweep(
    betas: Sequence[float] = DEFAULT_BETAS,
    gammas: Sequence[float] = DEFAULT_GAMMAS,
    *,
    population: int = 10_000,
    days: int = 160,
    replicates: int = 200,
    seed: int = 0,
    app: TaskkitApp | None = None,
) -> AsyncResult:
    """Fan the grid out as a chord; the returned result's `.parent` is the group.

    The header goes out through submit_chord: every point checked first, then published in
    pipelined batches, each message the one Celery's chord would send.
    """
    app = app or get_app()
    header = [
        app.signature(simulate.name, (b, g), {"population": population, "days": days, "replicates": replicates, "seed": seed + n})
        for n, (b, g) in enumerate(itertools.product(betas, gammas))
    ]
    return submit_chord(header, app.signature(collect.name), app=app)


def wait_sweep(
    result: AsyncResult, *, timeout: float = 300.0, on_progress: Callable[[int, int], None] | None = None
) -> list[dict[str, Any]]:
    """Block until the chord is done, calling on_progress(done, total) as points finish."""
    group, deadline, last = result.parent, time.monotonic() + timeout, -1
    while True:
        done = group.completed_count()
        if on_progress and done != last:
            on_progress(done, len(group.results))
            last = done
        try:
            rows = result.get(timeout=0.5)
        except CeleryTimeout:
            if time.monotonic() > deadline:
                raise
            continue
        if on_progress and last != len(group.results):
            on_progress(len(group.results), len(group.results))
        return rows


def sweep_frame(rows: list[dict[str, Any]]) -> Any:
    """The sweep's rows as a pandas DataFrame, one row per (beta, gamma)."""
    import pandas as pd  # the read side only (the CLI's table, notebooks)

    return pd.DataFrame(rows).set_index(["beta", "gamma"]).sort_index()
