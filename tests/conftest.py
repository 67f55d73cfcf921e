"""Shared fixtures: real Fashion-MNIST subsets, the shipped teacher, and the real CLI entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
TEACHER = REPO / "recipes" / "teachers" / "fmnist_resnet20.pt"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -m edgekd ARGS`` in a fresh process, as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "edgekd", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=timeout,
        env=env,
    )


def one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """Assert a CLI failure: exit ``code``, one ``edgekd: error:`` line (the last on stderr), no traceback.

    Progress lines of stages that ran before the failure may precede it; the error itself is one line.
    """
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("edgekd: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-2000:]
    return errors[0]


@pytest.fixture(scope="session")
def small_data():
    from edgekd.data import build_data
    from edgekd.recipe.schema import DataConfig

    return build_data(DataConfig(train_limit=1024, eval_limit=512))


@pytest.fixture()
def write_recipe(tmp_path):
    """Write YAML text to a recipe file in tmp_path and return its path."""

    def _write(text: str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write
