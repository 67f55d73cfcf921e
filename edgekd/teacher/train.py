"""``edgekd train``: train a teacher from a recipe and write ``teacher.pt`` with its provenance.

The checkpoint is a plain state dict (loads with ``weights_only=True``); a ``teacher.json`` beside it records the
resolved recipe, the eval metrics, the training history and the checkpoint's sha256, so a shipped teacher can
be verified and reproduced.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from edgekd.data import build_data
from edgekd.engine.trainer import FitOptions, fit, seed_everything
from edgekd.io import sha256_file, write_json, write_with
from edgekd.models.complexity import count_complexity
from edgekd.recipe.schema import Recipe
from edgekd.results import TrainResult, to_dict
from edgekd.rundir import RunDir
from edgekd.tasks import get_task
from edgekd.teacher.build import build_teacher

log = logging.getLogger("edgekd")


@dataclass(frozen=True)
class TeacherRun:
    checkpoint: Path
    sha256: str
    result: TrainResult
    macs: int
    params: int


def train_teacher(recipe: Recipe, out_dir: Path, resume: bool = False) -> TeacherRun:
    """Train the recipe's teacher (from ``teacher.checkpoint`` when given) into ``out_dir/teacher.pt``."""
    started = time.perf_counter()
    seed_everything(recipe.seed)
    data = build_data(recipe.data)
    task = get_task(recipe.task, data)
    model = build_teacher(recipe, data)
    criterion = task.criterion(recipe.train.label_smoothing)

    def compute_loss(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss = criterion(task.output_tensor(model(images)), targets)
        return loss, {"ce": float(loss.detach())}

    run = RunDir(out_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    options = FitOptions(
        optim=recipe.train,
        batch_size=recipe.data.batch_size,
        augment=recipe.data.augment,
        seed=recipe.seed,
        desc="train",
        checkpoint=run.checkpoint("train"),
        resume=resume,
        eval_batch_size=recipe.data.eval_batch_size,
    )
    result = fit(model, data, task, compute_loss, options)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    write_with(run.teacher_pt, lambda tmp: torch.save(state, tmp))
    digest = sha256_file(run.teacher_pt)
    cost = count_complexity(model, data.example_input(1))
    write_json(
        run.teacher_json,
        {
            "checkpoint": run.teacher_pt.name,
            "sha256": digest,
            "model": recipe.teacher.model.model_dump(mode="json"),
            "macs": cost.macs,
            "params": cost.params,
            "metrics": result.metrics,
            "best_epoch": result.best_epoch,
            "history": to_dict(result.history),
            "seconds": time.perf_counter() - started,
            "recipe": recipe.to_yaml_dict(),
        },
    )
    log.info(
        "teacher: %s %.4f, wrote %s (sha256 %s)",
        task.primary_metric,
        result.metrics[task.primary_metric],
        run.teacher_pt,
        digest[:12],
    )
    return TeacherRun(run.teacher_pt, digest, result, cost.macs, cost.params)
