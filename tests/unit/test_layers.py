"""The package's floors: module-level imports form no circle, and the write side stays lean.

Reads the source with `ast` (imports at module level only; a function-level import is a
deliberate deferral of a heavy dependency and says why beside it). The lean-worker check
runs in a fresh interpreter, since this test process may already have pandas loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "taskkit"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """taskkit modules that `name` imports at module level (parent packages' implicit imports left out)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:  # `from . import x` imports the module x
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def test_module_imports_form_no_circle() -> None:
    try:
        order = list(TopologicalSorter(graph()).static_order())
    except CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None
    assert "taskkit.errors" in order


def test_the_write_side_never_imports_the_app_or_the_read_side() -> None:
    g = graph()
    forbidden = {"taskkit.app", "taskkit.history", "taskkit.reports", "taskkit"}
    for name, deps in g.items():
        if name.startswith("taskkit.capture"):
            assert not deps & forbidden, f"{name} imports {deps & forbidden}"


def test_declarations_import_only_errors() -> None:
    g = graph()
    for name in ("taskkit.kinds", "taskkit.schedule_spec"):
        assert g[name] <= {"taskkit.errors", "taskkit.kinds"}, f"{name} imports {g[name]}"


def test_a_worker_loads_neither_pandas_nor_numpy() -> None:
    code = (
        "import sys, taskkit.app; app = taskkit.app.create_app(); app.loader.import_default_modules(); "
        "import taskkit.beat, taskkit.capture; print(sorted(m for m in ('pandas', 'numpy', 'ipywidgets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_import_taskkit_defers_pandas_until_the_reader_is_used() -> None:
    code = "import sys, taskkit; a = 'pandas' in sys.modules; taskkit.runs; print(a, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert out.stdout.split() == ["False", "True"], out.stdout + out.stderr
