"""The export stage as the pipeline sees it: ``run(ctx, upstream) -> ExportResult`` (see :mod:`edgekd.context`).

What it ships, in the order ``report.json["artifacts"]`` lists them: ``teacher.onnx`` (the unpruned teacher,
exported so the report compares ORT numbers with ORT numbers), ``student.onnx``, the INT8/FP16 variants the
recipe enables, and last ``student.pt`` with the distilled student's PyTorch metrics. The student is loaded
from ``student.pt`` rather than taken from the distill stage, so a fresh run, a resumed run and
``edgekd export`` all export exactly the file that ships.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from edgekd.context import RunContext, Stage, Upstream, section
from edgekd.engine.run_student import load_run_student
from edgekd.export.fp32 import export_onnx
from edgekd.export.parity import ParityReference
from edgekd.export.variants import export_variants
from edgekd.io import sha256_file
from edgekd.results import Artifact, DistillResult, ExportResult
from edgekd.rundir import STUDENT_PT


def run(ctx: RunContext, upstream: Upstream) -> ExportResult:
    """Export teacher and student to FP32 ONNX, derive the enabled variants, and record ``student.pt``.

    Args:
        ctx: The run: its recipe's ``export`` section, data, task, teacher and run directory.
        upstream: Must hold a :class:`~edgekd.results.DistillResult` (its student metrics go on
            ``student.pt``'s record).

    Returns:
        The artifacts: ``teacher.onnx``, ``student.onnx``, the variants, ``student.pt``.

    Raises:
        EdgekdError: no distill result upstream, or a model cannot be exported or converted.
        GateError: a file failed parity; it is not written, and later files are not attempted.
        InputError: ``student.pt`` is missing or unreadable.
    """
    distilled = upstream.get(DistillResult)  # before the slow part: a missing stage fails at once
    student = load_run_student(ctx.run.student_pt, ctx.recipe)
    artifacts = [_export_fp32(ctx, ctx.teacher, ctx.run.teacher_onnx, "teacher")]
    artifacts += export_student(ctx, student)
    artifacts.append(Artifact.of_file(ctx.run.student_pt, name=STUDENT_PT, metrics=distilled.student.metrics))
    return ExportResult(tuple(artifacts))


def export_student(ctx: RunContext, student: nn.Module) -> list[Artifact]:
    """``student.onnx``, then the INT8/FP16 variants the recipe enables, each gated against ``student``.

    Why apart from :func:`run`: ``edgekd export student.pt`` ships a student on its own (no teacher, no
    distill result), and must derive exactly the files ``compress`` ships.

    Raises:
        EdgekdError: the student cannot be exported or converted.
        GateError: a file failed parity; it is not written, and later files are not attempted.
    """
    run_dir = ctx.run
    artifacts = [_export_fp32(ctx, student, run_dir.student_onnx, "student")]
    reference = ParityReference(student, ctx.data, ctx.task)
    return artifacts + export_variants(run_dir.student_onnx, reference, ctx.recipe.export, run_dir, ctx.seed)


def _export_fp32(ctx: RunContext, model: nn.Module, path: Path, role: str) -> Artifact:
    reference = ParityReference(model, ctx.data, ctx.task)
    return export_onnx(reference, ctx.recipe.export, path, name=path.name, metadata={"role": role})


def inputs(ctx: RunContext, upstream: Upstream) -> dict[str, Any]:
    """What the export depends on besides earlier stages: the student file's bytes and the export settings."""
    return {"student": sha256_file(ctx.run.student_pt), "export": section(ctx.recipe, "export")}


def outputs(ctx: RunContext, result: ExportResult) -> list[Path]:
    """The ONNX files written (``student.pt`` belongs to the distill stage, which wrote it)."""
    return [ctx.run.file(a.path) for a in result.artifacts if a.format == "onnx"]


STAGE = Stage(name="export", result=ExportResult, run=run, inputs=inputs, outputs=outputs)
