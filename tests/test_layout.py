"""The engine's house rules, pinned: sizes, names and the import layers.

``docs/ARCHITECTURE.md`` ("The house") says why; these tests fail when a change breaks a
rule, so the layout does not drift back into a knot.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sagaline"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _stem(name: str) -> str:
    """A module's name without a leading underscore or a plural ending."""
    name = name.lstrip("_")
    for plural, singular in (("ren", ""), ("ies", "y"), ("s", "")):
        if name.endswith(plural) and len(name) > len(plural) + 2:
            return name[: -len(plural)] + singular
    return name


def test_no_module_of_the_engine_is_over_400_lines() -> None:
    """A module that grows past the limit holds more than one idea."""
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := p.read_text().count("\n")) > MAX_FILE_LINES}
    assert long == {}


def test_no_function_of_the_engine_is_over_60_lines() -> None:
    """A long function is a missing concept."""
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert long == []


def test_no_module_name_starts_with_an_underscore() -> None:
    """Folders mark families; an underscore would mean three things again."""
    private = [str(p.relative_to(ROOT)) for p in _modules()
               if p.name.startswith("_") and p.name not in ("__init__.py", "__main__.py")]
    assert private == []


def test_no_two_modules_differ_only_by_an_underscore_or_a_plural() -> None:
    """``record.py`` / ``_records.py`` were three different things; never again."""
    names = {p.stem for p in _modules() if not p.stem.startswith("__")}
    names |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    by_stem: dict[str, set[str]] = {}
    for name in names:
        by_stem.setdefault(_stem(name), set()).add(name)
    assert {stem: found for stem, found in by_stem.items() if len(found) > 1} == {}


def test_the_import_layers_hold() -> None:
    """Imports run down only, TYPE_CHECKING ones included (the contracts in pyproject)."""
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter)], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
