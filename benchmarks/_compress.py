"""Shared by the benchmarks that run the real pipeline: ``edgekd compress`` in a fresh process, its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def compress_report(recipe: Path, out: Path, overrides: list[str]) -> dict:
    """Run ``edgekd compress RECIPE --out OUT --set ...`` and return its report.json; exit on a failed run."""
    sets = [arg for override in overrides for arg in ("--set", override)]
    cmd = [sys.executable, "-m", "edgekd", "compress", str(recipe), "--out", str(out), *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{out.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "report.json").read_text())


def artifact(report: dict, name: str) -> dict:
    """The report's entry for the shipped file ``name`` (``student.onnx``, ``teacher.onnx``)."""
    return next(a for a in report["artifacts"] if a["name"] == name)
