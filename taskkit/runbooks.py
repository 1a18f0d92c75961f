"""Runbooks: notebooks with a papermill `parameters` cell, run unattended and kept as a dated record."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import InvalidOption, RunbookFailed, UnknownRunbook

RUNBOOKS_DIR = "notebooks/runbooks"  # relative to the working directory, like ./taskkit.toml
RECORDS_DIR = "runbook-runs"  # executed copies: RECORDS_DIR/YYYY-MM-DD/NAME-HHMMSS.ipynb


def available(directory: str | os.PathLike[str] = RUNBOOKS_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.ipynb"))


def parse_value(text: str) -> Any:
    """A `-p key value` from the command line: true/false/none, numbers, else the text itself."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run(
    name: str,
    parameters: dict[str, Any] | None = None,
    *,
    directory: str | os.PathLike[str] = RUNBOOKS_DIR,
    records: str | os.PathLike[str] = RECORDS_DIR,
    timeout: float = 600.0,
) -> Path:
    """Execute runbook `name` with papermill and return the path of the executed copy (kept as a record).

    Parameters are checked against the runbook's `parameters` cell first: a name it does not
    declare is refused before anything runs. A failing cell raises papermill's error; the
    record up to that cell is still written, and RunbookFailed names the cell and the record.
    """
    try:
        import papermill  # the notebook extra: loaded only when a runbook runs
    except ImportError:
        raise RunbookFailed(name, "", "papermill is not installed: pip install 'taskkit[notebook]'") from None
    source = Path(directory) / f"{name}.ipynb"
    if not source.is_file():
        raise UnknownRunbook(name, str(directory), available(directory))
    declared = papermill.inspect_notebook(str(source))
    for key, value in (parameters or {}).items():
        if key not in declared:
            raise InvalidOption(key, value, f"a parameter of runbook {name} ({', '.join(declared)})")
    out = record_path(name, records)
    try:
        papermill.execute_notebook(
            str(source), str(out), parameters=parameters or {}, cwd=str(source.parent), kernel_name="python3",
            execution_timeout=timeout, progress_bar=False,
        )  # fmt: skip
    except papermill.PapermillExecutionError as exc:  # the record up to the failing cell is written
        raise RunbookFailed(name, str(out), f"cell {exc.cell_index}: {exc.ename}: {exc.evalue}") from None
    except Exception as exc:  # no kernel, a bad notebook: one line, not papermill's traceback
        raise RunbookFailed(name, str(out) if out.exists() else "", f"{type(exc).__name__}: {exc}") from None
    return out


def record_path(name: str, records: str | os.PathLike[str]) -> Path:
    """records/YYYY-MM-DD/NAME-HHMMSS.ipynb, with -2, -3 … when two runs share a second."""
    now = datetime.now(UTC)
    base = Path(records) / f"{now:%Y-%m-%d}" / f"{name}-{now:%H%M%S}"
    base.parent.mkdir(parents=True, exist_ok=True)
    out, n = base.with_suffix(".ipynb"), 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}.ipynb")
    return out
