"""`bash run`: a pip failure shows its cause and one hint, not a wall of resolver noise."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_an_impossible_pin_shows_pips_cause_and_which_python(tmp_path):
    for name in ("run", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "taskkit", tmp_path / "taskkit", ignore=shutil.ignore_patterns("__pycache__"))
    good = (ROOT / "constraints.txt").read_text()
    (tmp_path / "constraints.txt").write_text(good.replace("click==", "click==0.0.1\n#"))  # a release that does not exist
    out = subprocess.run(["bash", "run", "check-constraints", sys.executable], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    err = out.stderr
    assert "FAILED after" in err and "the cause:" in err
    assert "click==0.0.1" in err  # pip's own cause line
    assert f"hint: this used Python {sys.version.split()[0]}" in err and "PYTHON=/path/to/python3" in err
    assert len(err.splitlines()) < 45, err  # the cause, not the whole resolver log
