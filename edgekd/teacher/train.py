"""``edgekd train``: train a teacher from a recipe and write ``teacher.pt`` with its provenance.

The checkpoint is a plain state dict (loads with ``weights_only=True``); a ``teacher.json`` beside it records the
resolved recipe, the test metrics (the eval split, evaluated once after training), the validation metrics the
best epoch was selected on, the training history and the checkpoint's sha256, so a shipped teacher can be
verified and reproduced.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from edgekd.data import build_data
from edgekd.engine.device import teacher_device
from edgekd.engine.summary import summarize
from edgekd.engine.trainer import FitOptions, fit, seed_everything
from edgekd.io import sha256_file, write_json, write_with
from edgekd.recipe.schema import Recipe
from edgekd.results import ModelSummary, TrainResult, to_dict
from edgekd.rundir import RunDir
from edgekd.tasks import get_task
from edgekd.teacher.build import build_teacher

log = logging.getLogger("edgekd")


@dataclass(frozen=True)
class TeacherRun:
    checkpoint: Path
    sha256: str
    result: TrainResult
    summary: ModelSummary  # params, MACs, test metrics (once, after training) and validation metrics


def train_teacher(recipe: Recipe, out_dir: Path, resume: bool = False) -> TeacherRun:
    """Train the recipe's teacher (from ``teacher.checkpoint`` when given) into ``out_dir/teacher.pt``."""
    started = time.perf_counter()
    device = teacher_device(recipe)  # a missing GPU or fp16 on a CPU fails here, before the data loads
    log.info("train: training on %s", device.describe())
    seed_everything(recipe.seed)
    data = build_data(recipe.data, recipe.seed, teacher=recipe.teacher.model.name)
    task = get_task(recipe.task, data)
    model = build_teacher(recipe, data)
    criterion = task.criterion(recipe.train.label_smoothing)

    def compute_loss(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss = criterion(task.output_tensor(model(images)).float(), targets)  # float32 under autocast too
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
        device=device,
    )
    result = fit(model, data, task, compute_loss, options)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    write_with(run.teacher_pt, lambda tmp: torch.save(state, tmp))
    digest = sha256_file(run.teacher_pt)
    summary = summarize(model, data, task, recipe.data.eval_batch_size, "the trained teacher")
    write_json(
        run.teacher_json,
        {
            "checkpoint": run.teacher_pt.name,
            "sha256": digest,
            "model": recipe.teacher.model.model_dump(mode="json"),
            "macs": summary.macs,
            "params": summary.params,
            "metrics": summary.metrics,
            "val_metrics": summary.val_metrics,
            "best_epoch": result.best_epoch,
            "history": to_dict(result.history),
            "seconds": time.perf_counter() - started,
            "recipe": recipe.to_yaml_dict(),
        },
    )
    log.info(
        "teacher: test %s %.4f, wrote %s (sha256 %s)",
        task.primary_metric,
        summary.metrics[task.primary_metric],
        run.teacher_pt,
        digest[:12],
    )
    return TeacherRun(run.teacher_pt, digest, result, summary)
