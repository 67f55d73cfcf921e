"""The report stage: judge the shipped files against the deploy gates, then write report.json/md/html.

It sees only the results of the stages before it (never models or sessions, except to draw the segmentation
strip from the shipped ONNX files), so the report always describes exactly what was shipped. A failed gate
does not stop it: a gated CI job still gets every file and the report explaining the failure; the
orchestrator exits with code 3 afterwards (:class:`~edgekd.results.ReportResult` carries the gates).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgekd.context import RunContext, Stage, Upstream
from edgekd.data.base import DataBundle
from edgekd.latency.predict import attach_predictions
from edgekd.report.build import ReportInputs, build_report
from edgekd.report.deploy import InputSpec, describe_input
from edgekd.report.gates import evaluate_gates, parity_gates
from edgekd.report.precision import MetricRule, recommend_precision
from edgekd.report.render import write_reports
from edgekd.results import DistillResult, ProfileResult, PruneResult, ReportResult, TeacherResult
from edgekd.rundir import RunDir

log = logging.getLogger("edgekd")


def run(ctx: RunContext, upstream: Upstream) -> ReportResult:
    """Gates, report.json and the human reports of the run in ``ctx.run``."""
    recipe, formats = ctx.recipe, ctx.recipe.report.formats
    artifacts = list(upstream.get(ProfileResult).artifacts)
    parity = parity_gates(artifacts, recipe.export)
    gates = evaluate_gates(recipe.gates, artifacts, ctx.task)
    distilled = upstream.get(DistillResult)
    report = build_report(
        ReportInputs(
            recipe=recipe.to_yaml_dict(),
            task=recipe.task,
            teacher=upstream.get(TeacherResult).summary,
            student=distilled.student,
            prune=upstream.find(PruneResult),
            distill=distilled.train,
            artifacts=artifacts,
            gates=gates,
            stages=dict(upstream.stages),
            parity=parity,
            input=shipped_input(ctx),
            precision=recommend_precision(artifacts, precision_rule(ctx)),
        )
    )
    report["reproducibility"] = reproducibility(ctx, upstream.stages)
    # predicted beside measured p50, for each profile whose target has a cached latency model
    attach_predictions(report, ctx.run.root, artifacts, recipe.profile.latency_cache)
    if ctx.task.dense_output and {"md", "html"} & set(formats):
        segmentation_strip(ctx.run, ctx.data)
    write_reports(ctx.run.root, report, formats)
    log.info("done: %s", ctx.run.report_md if "md" in formats else ctx.run.report_json)
    return ReportResult(report=report, gates=tuple(parity + gates))


def inputs(ctx: RunContext, upstream: Upstream) -> dict[str, Any]:
    return {}  # never reused (resumable=False): the report names this run's own timings


STAGE = Stage(name="report", result=ReportResult, run=run, inputs=inputs, resumable=False)


def precision_rule(ctx: RunContext) -> MetricRule:
    """The task's primary metric, its direction and ``export.precision_tolerance``."""
    task = ctx.task
    return MetricRule(task.primary_metric, task.higher_is_better, ctx.recipe.export.precision_tolerance)


def shipped_input(ctx: RunContext) -> InputSpec | None:
    """report.json ``input``, read from the shipped ``student.onnx`` (``None`` when the run has none)."""
    if not ctx.run.student_onnx.is_file():
        log.warning("report: %s not found; the report says nothing about its input", ctx.run.student_onnx)
        return None
    return describe_input(ctx.run.student_onnx, ctx.data, ctx.recipe.task)


def reproducibility(ctx: RunContext, stages: Any) -> dict[str, Any]:
    """What a rerun needs to reproduce this report's numbers bit for bit on CPU (versions: ``environment``).

    ``seed`` seeds Python, NumPy and torch at the start and again before distillation; torch-pruning runs
    under it; the training loader draws epoch ``e``'s order and augmentation from ``seed * 100003 + e``.
    CPU kernels reduce in an order that depends on ``torch_threads``, so that is recorded too.
    """
    import torch

    return {
        "seed": ctx.seed,
        "torch_threads": torch.get_num_threads(),
        "reused_stages": [name for name, info in stages.items() if info.get("reused")],
        "resumed_training": [name for name, info in stages.items() if info.get("resumed_checkpoint")],
    }


def segmentation_strip(run: RunDir, data: DataBundle) -> Path:
    """``plots/segmentation.png``: a few eval images with the masks of the shipped teacher and student files."""
    from edgekd.export.ort import OrtPredictor, create_session
    from edgekd.report.samples import SEGMENTATION_PLOT, write_segmentation_strip

    teacher, student = (OrtPredictor(create_session(p)) for p in (run.teacher_onnx, run.student_onnx))
    return write_segmentation_strip(run.plots / SEGMENTATION_PLOT, data, teacher, student)
