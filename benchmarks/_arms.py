"""Shared by the arm-comparison benchmarks (gaze.py, fashion_scenes.py): distil one student per arm and score
the ONNX file it ships, exactly as ``edgekd compress`` would (parity-gated export, then the task's metrics in
ONNX Runtime on the eval split)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from torch import nn

from edgekd import distill
from edgekd.context import RunContext
from edgekd.data import DataBundle
from edgekd.export import ParityReference, export_onnx
from edgekd.models.complexity import count_complexity
from edgekd.recipe import Recipe
from edgekd.rundir import RunDir
from edgekd.tasks import Task, get_task


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ort_metrics(
    model: nn.Module, data: DataBundle, task: Task, recipe: Recipe, path: Path
) -> dict[str, float]:
    """Metrics of ``model`` exported to ONNX (parity-gated) and run by ONNX Runtime."""
    artifact = export_onnx(
        ParityReference(model, data, task), recipe.export, path, metadata={"role": "student"}
    )
    return dict(artifact.metrics)


def distill_arm(
    key: str,
    label: str,
    student: nn.Module,
    teachers: list[nn.Module],
    data: DataBundle,
    recipe: Recipe,
    work: Path,
) -> dict:
    """Distil ``student`` from ``teachers`` with ``recipe.distill`` and score its ONNX file; one results row."""
    task = get_task(recipe.task, data)
    started = time.perf_counter()
    ctx = RunContext(recipe=recipe, run=RunDir(work), data=data, task=task, teachers=tuple(teachers))
    result = distill.train_student(ctx, student)
    metrics = ort_metrics(student, data, task, recipe, work / f"{key}.onnx")
    cost = count_complexity(student, data.example_input(1))
    row = {
        "label": label,
        "losses": [spec.model_dump() for spec in recipe.distill.losses],
        "ort": metrics,
        "best_epoch": result.best_epoch,
        "history": [entry.metrics for entry in result.history],
        "macs": cost.macs,
        "params": cost.params,
        "seconds": time.perf_counter() - started,
    }
    log(f"{label}: {metrics}, best epoch {result.best_epoch}, {row['seconds']:.0f} s")
    return row
