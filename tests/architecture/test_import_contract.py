"""The import direction (docs/design.md) is checked by import-linter; a reversed import breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def tree_copy(tmp_path: Path) -> Path:
    for name in ("app", "worker", "tuners"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_the_contract(tree_copy: Path) -> None:
    result = lint_imports(tree_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "reversed_import"), [
    ("app/core/reversed.py", "import app.registry.db\n"),
    ("app/data/reversed.py", "from app.services import runs\n"),
    ("worker/reversed.py", "from app.services.context import Context\n"),
    ("app/services/reversed.py", "import worker.engine\n"),
    ("tuners/reversed.py", "from app.core import spec\n"),
    ("app/ui/steps/reversed.py", "from worker import tasks\n"),
])
def test_a_reversed_import_breaks_the_contract(tree_copy: Path, module: str, reversed_import: str) -> None:
    (tree_copy / module).write_text(reversed_import)
    result = lint_imports(tree_copy)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout
