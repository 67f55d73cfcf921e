"""The run directory: the one contract between stages, the CLI, the Python API and users' CI.

Layout and key names are fixed by ``CONVENTIONS.md``; code asks this class for a path instead of spelling file
names, so the layout lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def teacher_onnx(self) -> Path:
        return self.root / "teacher.onnx"

    @property
    def student_pt(self) -> Path:
        return self.root / "student.pt"

    @property
    def student_onnx(self) -> Path:
        return self.root / "student.onnx"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def log(self) -> Path:
        return self.root / "edgekd.log"

    def stage_result(self, stage: str) -> Path:
        """JSON result a stage leaves for later stages and ``--resume`` (``state/<stage>.json``)."""
        return self.state / f"{stage}.json"

    def create(self) -> RunDir:
        for d in (self.root, self.plots, self.state):
            d.mkdir(parents=True, exist_ok=True)
        return self
