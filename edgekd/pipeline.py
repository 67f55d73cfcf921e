"""``edgekd compress``: teacher → prune → distill → export → profile → report, in one run directory.

This module only sequences stages: each stage is called through its public ``run``-style function and hands back
a result dataclass (``edgekd.results``); nothing here reaches into a stage's internals. Every file lands through
``edgekd.io`` (atomic), the run directory is locked for the duration, and the resolved recipe is written first
so a run directory always says what produced it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from edgekd import __version__
from edgekd.data import DataBundle, build_data
from edgekd.engine.evaluate import evaluate_model
from edgekd.engine.teacher import build_teacher
from edgekd.engine.trainer import seed_everything
from edgekd.io import RunLock, remove_stale_temporaries, sha256_file, write_text
from edgekd.models.complexity import count_complexity
from edgekd.recipe import Recipe, dump_recipe
from edgekd.results import Artifact, Gate, ModelSummary, PruneResult, TrainResult
from edgekd.rundir import RunDir
from edgekd.tasks import Task, get_task

log = logging.getLogger("edgekd")


@dataclass
class StageClock:
    """Wall-clock seconds per stage, for ``report.json["stages"]`` (and the slowest-stage line)."""

    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        info: dict[str, Any] = {}
        log.info("── %s", name)
        start = time.perf_counter()
        try:
            yield info
        finally:
            self.stages[name] = {"seconds": round(time.perf_counter() - start, 3), **info}


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Mirror the ``edgekd`` logger (all levels) into ``RUN/edgekd.log`` for the run's duration."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("edgekd")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def summarize(model: nn.Module, data: DataBundle, task: Task, batch_size: int) -> ModelSummary:
    """Params, MACs (batch 1, the one counter) and PyTorch eval metrics of a model."""
    cost = count_complexity(model, data.example_input(1))
    metrics = evaluate_model(model, data.eval_loader(batch_size), task)
    return ModelSummary(params=cost.params, macs=cost.macs, metrics=metrics)


def student_meta(recipe: Recipe, prune: PruneResult | None, distill: TrainResult | None) -> dict[str, Any]:
    """What ``student.pt`` carries besides weights: enough for ``edgekd export student.pt`` to run alone."""
    from edgekd.results import to_dict

    return {
        "edgekd_version": __version__,
        "recipe": recipe.to_yaml_dict(),
        "prune": to_dict(prune) if prune else None,
        "metrics": distill.metrics if distill else None,
    }


def pt_artifact(path: Path, metrics: dict[str, float]) -> Artifact:
    return Artifact(
        name="student.pt",
        path=path.name,
        format="pt",
        precision="fp32",
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        metrics=metrics,
    )


def compress(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Run the whole pipeline into ``out`` and return the report (as written to ``report.json``).

    Raises:
        InputError: bad recipe values discovered while building data/models (exit 2).
        GateError: the student's ONNX parity gate failed (exit 3); earlier artifacts stay, none is half-written.
    """
    from edgekd import distill, export, profile, prune
    from edgekd.models.student_file import save_student
    from edgekd.report import build_report, write_reports

    run = RunDir(out).create()
    with RunLock(run.root), run_log(run.log):
        remove_stale_temporaries(run.root)
        write_text(run.recipe, dump_recipe(recipe))
        log.info("edgekd %s: compress → %s", __version__, run.root)
        clock = StageClock()
        seed_everything(recipe.seed)
        task = get_task(recipe.task)
        eval_bs = recipe.data.eval_batch_size

        with clock.stage("data") as info:
            data = build_data(recipe.data)
            info.update(train=len(data.train), eval=len(data.eval))
        with clock.stage("teacher"):
            teacher = build_teacher(recipe, data)
            teacher_summary = summarize(teacher, data, task, eval_bs)
            log.info(
                "teacher: %s, %.2f MMAC, %d params",
                _fmt(teacher_summary.metrics),
                teacher_summary.macs / 1e6,
                teacher_summary.params,
            )
        with clock.stage("prune"):
            student, prune_result = prune.run(teacher, data, task, recipe.prune, recipe.seed)
            log.info(
                "pruned: MACs −%.1f%%, params −%.1f%%",
                100 * prune_result.macs_reduction,
                100 * prune_result.params_reduction,
            )
        with clock.stage("distill") as info:
            distill_result = distill.run(
                student,
                [teacher],
                data,
                task,
                recipe.distill,
                recipe.data,
                recipe.seed,
                checkpoint=run.state / "distill-last.pt",
            )
            info.update(epochs=distill_result.epochs, best_epoch=distill_result.best_epoch)
            save_student(
                run.student_pt,
                student,
                recipe.teacher.model,
                data.num_classes,
                data.in_channels,
                meta=student_meta(recipe, prune_result, distill_result),
            )
            student_summary = summarize(student, data, task, eval_bs)
        with clock.stage("export"):
            artifacts = [
                export.export_onnx(
                    teacher,
                    data,
                    task,
                    recipe.export,
                    run.teacher_onnx,
                    name="teacher.onnx",
                    metadata={"role": "teacher"},
                ),
                export.export_onnx(
                    student,
                    data,
                    task,
                    recipe.export,
                    run.student_onnx,
                    name="student.onnx",
                    metadata={"role": "student"},
                ),
            ]
        with clock.stage("profile"):
            profiles = profile.run({a.name: run.root / a.path for a in artifacts}, recipe.profile)
            artifacts = [dataclasses.replace(a, profiles=tuple(profiles.get(a.name, ()))) for a in artifacts]
        artifacts.append(pt_artifact(run.student_pt, student_summary.metrics))
        gates = [
            Gate(
                name=f"parity:{a.name}",
                value=a.parity.max_abs_diff,
                limit=recipe.export.parity_atol,
                passed=a.parity.passed,
            )
            for a in artifacts
            if a.parity is not None
        ]
        report = build_report(
            recipe=recipe.to_yaml_dict(),
            task=recipe.task,
            teacher=teacher_summary,
            student=student_summary,
            prune=prune_result,
            distill=distill_result,
            artifacts=artifacts,
            gates=gates,
            stages=clock.stages,
        )
        write_reports(run.root, report, recipe.report.formats)
        log.info("done: %s", run.report_md if "md" in recipe.report.formats else run.report_json)
        return report


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
