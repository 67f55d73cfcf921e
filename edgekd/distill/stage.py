"""The distill stage: train the pruned student against the frozen teacher(s) with the recipe's losses."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgekd.data.base import DataBundle
from edgekd.distill.objective import DistillObjective
from edgekd.engine.trainer import FitOptions, fit, seed_everything
from edgekd.recipe.schema import DataConfig, DistillConfig
from edgekd.results import TrainResult
from edgekd.tasks.base import Task


def run(
    student: nn.Module,
    teachers: list[nn.Module],
    data: DataBundle,
    task: Task,
    cfg: DistillConfig,
    data_cfg: DataConfig,
    seed: int,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Distil into ``student`` in place; on return it holds the best-evaluated weights.

    Args:
        student: the pruned model (trainable).
        teachers: frozen teacher models (the unpruned original first).
        checkpoint: per-epoch checkpoint path (``state/distill-last.pt``) enabling ``resume``.
    """
    seed_everything(seed)
    student.requires_grad_(True)  # the prune stage hands over a frozen copy
    objective = DistillObjective(
        student,
        teachers,
        cfg.losses,
        task,
        data.num_classes,
        data.example_input(2),
        fuse_teachers=cfg.fuse_teacher,
    )
    try:
        if not data_cfg.augment and cfg.teacher_cache_mib > 0 and cfg.epochs > 0:
            # same images every epoch: run the teachers once (batches of the training size, in split order)
            in_order = data.train_loader(data_cfg.batch_size, augment=False, seed=seed, shuffle=False)
            objective.cache_teacher(in_order, int(cfg.teacher_cache_mib * 2**20))
        options = FitOptions(
            optim=cfg,
            batch_size=data_cfg.batch_size,
            augment=data_cfg.augment,
            seed=seed,
            desc="distill",
            checkpoint=checkpoint,
            resume=resume,
        )
        return fit(student, data, task, objective, options, extra_modules=objective.losses)
    finally:
        objective.close()
