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
from torch import nn

from edgekd.data import DataBundle, build_data
from edgekd.engine.trainer import FitOptions, fit, seed_everything
from edgekd.io import sha256_file, write_json, write_with
from edgekd.models import build_model, load_checkpoint, load_weights
from edgekd.models.checkpoint import extract_state_dict
from edgekd.models.complexity import count_complexity
from edgekd.recipe.schema import Recipe, TeacherConfig
from edgekd.results import TrainResult, to_dict
from edgekd.tasks import get_task

log = logging.getLogger("edgekd")


@dataclass(frozen=True)
class TeacherRun:
    checkpoint: Path
    sha256: str
    result: TrainResult
    macs: int
    params: int


def build_teacher(recipe: Recipe, data: DataBundle, load: bool = True) -> nn.Module:
    """The teacher model of a recipe, with its checkpoint loaded when ``load`` and one is given."""
    return teacher_from_config(recipe.teacher, data, load)


def teacher_from_config(cfg: TeacherConfig, data: DataBundle, load: bool = True) -> nn.Module:
    """Build one teacher section's model (eval mode) and load its checkpoint when ``load`` and one is given."""
    model = build_model(cfg.model, data.num_classes, data.in_channels)
    if load and cfg.checkpoint is not None:
        raw = load_checkpoint(cfg.checkpoint, trust=cfg.trust_checkpoint)
        state = extract_state_dict(raw, source=str(cfg.checkpoint))
        load_weights(model, state, source=str(cfg.checkpoint))
    return model.eval()


def build_extra_teachers(recipe: Recipe, data: DataBundle) -> list[nn.Module]:
    """``distill.extra_teachers``, loaded and frozen (they only ever run under ``inference_mode``)."""
    return [teacher_from_config(cfg, data).requires_grad_(False) for cfg in recipe.distill.extra_teachers]


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

    out_dir.mkdir(parents=True, exist_ok=True)
    options = FitOptions(
        optim=recipe.train,
        batch_size=recipe.data.batch_size,
        augment=recipe.data.augment,
        seed=recipe.seed,
        desc="train",
        checkpoint=out_dir / "state" / "train-last.pt",
        resume=resume,
    )
    result = fit(model, data, task, compute_loss, options)
    checkpoint = out_dir / "teacher.pt"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    write_with(checkpoint, lambda tmp: torch.save(state, tmp))
    digest = sha256_file(checkpoint)
    cost = count_complexity(model, data.example_input(1))
    write_json(
        out_dir / "teacher.json",
        {
            "checkpoint": checkpoint.name,
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
        checkpoint,
        digest[:12],
    )
    return TeacherRun(checkpoint, digest, result, cost.macs, cost.params)
