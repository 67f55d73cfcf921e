"""The run directory: the one contract between stages, the CLI, the Python API and users' CI.

Layout and key names are fixed by the README's "Run directory" section; code asks this module for a path or a
file name instead of spelling it, so the layout lives in one place. It sits below the stages (they write into
the run directory through :class:`RunDir`), next to the recipe schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RECIPE = "recipe.yaml"
TEACHER_ONNX = "teacher.onnx"
STUDENT_PT = "student.pt"
STUDENT_ONNX = "student.onnx"
INT8_ONNX = "student.int8.onnx"
FP16_ONNX = "student.fp16.onnx"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
LOG = "edgekd.log"
PLOTS = "plots"
STATE = "state"
# ``edgekd train``'s output directory
TEACHER_PT = "teacher.pt"
TEACHER_JSON = "teacher.json"

SHIPPABLE = (STUDENT_ONNX, INT8_ONNX, FP16_ONNX)
# Files a run leaves under a final name; a fresh run removes them so the directory never mixes two runs.
FINAL_NAMES = (TEACHER_ONNX, STUDENT_PT, *SHIPPABLE, REPORT_JSON, REPORT_MD, REPORT_HTML)


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory (nothing is created until :meth:`create`)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def file(self, name: str) -> Path:
        """A top-level file of the run by its name (one of this module's constants)."""
        return self.root / name

    @property
    def recipe(self) -> Path:
        return self.root / RECIPE

    @property
    def teacher_onnx(self) -> Path:
        return self.root / TEACHER_ONNX

    @property
    def student_pt(self) -> Path:
        return self.root / STUDENT_PT

    @property
    def student_onnx(self) -> Path:
        return self.root / STUDENT_ONNX

    @property
    def int8_onnx(self) -> Path:
        return self.root / INT8_ONNX

    @property
    def fp16_onnx(self) -> Path:
        return self.root / FP16_ONNX

    @property
    def report_json(self) -> Path:
        return self.root / REPORT_JSON

    @property
    def report_md(self) -> Path:
        return self.root / REPORT_MD

    @property
    def report_html(self) -> Path:
        return self.root / REPORT_HTML

    @property
    def plots(self) -> Path:
        return self.root / PLOTS

    @property
    def state(self) -> Path:
        return self.root / STATE

    @property
    def log(self) -> Path:
        return self.root / LOG

    @property
    def pruned_pt(self) -> Path:
        """The pruned, not yet distilled student; distillation always starts from this file."""
        return self.state / "pruned.pt"

    @property
    def sparse_pt(self) -> Path:
        """The teacher's copy after sparse training (``prune.sparsity``): what the prune stage then prunes."""
        return self.state / "sparse.pt"

    @property
    def teacher_pt(self) -> Path:
        """``edgekd train``'s checkpoint."""
        return self.root / TEACHER_PT

    @property
    def teacher_json(self) -> Path:
        """``edgekd train``'s provenance record beside :attr:`teacher_pt`."""
        return self.root / TEACHER_JSON

    def stage_result(self, stage: str) -> Path:
        """JSON result a single-stage command leaves for later stages (``state/<stage>.json``)."""
        return self.state / f"{stage}.json"

    def marker(self, stage: str) -> Path:
        """The resume marker of a finished stage (``state/<stage>.done.json``)."""
        return self.state / f"{stage}.done.json"

    def checkpoint(self, stage: str) -> Path:
        """A training stage's per-epoch checkpoint (``state/<stage>-last.pt``)."""
        return self.state / f"{stage}-last.pt"

    def started(self, stage: str) -> Path:
        """What a training stage's epoch checkpoint was started with (``state/<stage>.started.json``)."""
        return self.state / f"{stage}.started.json"

    def create(self) -> RunDir:
        for d in (self.root, self.plots, self.state):
            d.mkdir(parents=True, exist_ok=True)
        return self
