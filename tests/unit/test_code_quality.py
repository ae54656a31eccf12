"""The repository's own checks: ruff lint and the import-linter boundary of pure modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (ops/install.sh --dev installs it)")
    return found


def test_ruff_lint_is_clean() -> None:
    result = subprocess.run(
        [tool("ruff"), "check", "pipeline", "tests", "bench", "ops"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:]


def test_pure_modules_import_no_infrastructure() -> None:
    result = subprocess.run(
        [tool("lint-imports")], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "0 broken" in result.stdout


def test_mypy_strict_on_the_package() -> None:
    result = subprocess.run(
        [tool("mypy"), "pipeline"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:]
