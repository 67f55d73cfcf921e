"""The distill stage: train the pruned student against the frozen teacher(s) with the recipe's losses."""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

from torch import nn

from edgekd.data.base import DataBundle
from edgekd.distill.objective import DistillObjective
from edgekd.engine.trainer import FitOptions, fit, seed_everything
from edgekd.recipe.schema import DataConfig, DistillConfig, DistillPhase
from edgekd.results import TrainResult
from edgekd.tasks.base import Task

log = logging.getLogger("edgekd")


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

    With ``cfg.phases`` the phases run in order, each a full training run (own losses, epochs, optimizer and
    schedule) starting from the previous phase's best student; otherwise ``cfg`` itself is the one phase.
    The result's history numbers epochs across phases, so the report shows one continuous curve.

    Args:
        student: the pruned model (trainable).
        teachers: frozen teacher models (the unpruned original first).
        checkpoint: per-epoch checkpoint path (``state/distill-last.pt``) enabling ``resume``; later phases
            use ``distill-p2-last.pt``, ``distill-p3-last.pt``… beside it.
    """
    phases: list[DistillConfig | DistillPhase] = list(cfg.phases) or [cfg]
    paths = [phase_checkpoint(checkpoint, i) for i in range(len(phases))]
    if not resume:  # a later phase's file may be left from a run with other inputs: never resume from it
        for path in paths[1:]:
            if path is not None:
                path.unlink(missing_ok=True)
    results: list[TrainResult] = []
    for i, phase in enumerate(phases):
        review = [frozen_copy(student)] if getattr(phase, "self_review", False) and results else []
        label = getattr(phase, "name", "") or (f"phase{i + 1}" if len(phases) > 1 else "distill")
        if len(phases) > 1:
            log.info(
                "distill %s (%d of %d): %s",
                label,
                i + 1,
                len(phases),
                ", ".join(s.name for s in phase.losses),
            )
        results.append(
            _run_phase(
                student, [*teachers, *review], data, task, cfg, phase, data_cfg, seed, paths[i], resume, label
            )
        )
    return results[0] if len(results) == 1 else _chain(results)


def phase_checkpoint(checkpoint: Path | None, index: int) -> Path | None:
    """Epoch checkpoint of phase ``index`` (0: the stage's own file, so single-phase runs are unchanged)."""
    if checkpoint is None or index == 0:
        return checkpoint
    return checkpoint.with_name(checkpoint.name.replace("-last", f"-p{index + 1}-last"))


def frozen_copy(model: nn.Module) -> nn.Module:
    """A teacher-ready copy of ``model``: eval mode, no gradients, independent of further training."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def _run_phase(
    student: nn.Module,
    teachers: list[nn.Module],
    data: DataBundle,
    task: Task,
    cfg: DistillConfig,
    phase: DistillConfig | DistillPhase,
    data_cfg: DataConfig,
    seed: int,
    checkpoint: Path | None,
    resume: bool,
    label: str,
) -> TrainResult:
    seed_everything(seed)
    student.requires_grad_(True)  # the prune stage hands over a frozen copy
    objective = DistillObjective(
        student,
        teachers,
        phase.losses,
        task,
        data.num_classes,
        data.example_input(2),
        fuse_teachers=cfg.fuse_teacher,
    )
    try:
        if not data_cfg.augment and cfg.teacher_cache_mib > 0 and phase.epochs > 0:
            # same images every epoch: run the teachers once (batches of the training size, in split order)
            in_order = data.train_loader(data_cfg.batch_size, augment=False, seed=seed, shuffle=False)
            objective.cache_teacher(in_order, int(cfg.teacher_cache_mib * 2**20))
        options = FitOptions(
            optim=phase,
            batch_size=data_cfg.batch_size,
            augment=data_cfg.augment,
            seed=seed,
            desc=label,
            checkpoint=checkpoint,
            resume=resume,
        )
        return fit(student, data, task, objective, options, extra_modules=objective.losses)
    finally:
        objective.close()


def _chain(results: list[TrainResult]) -> TrainResult:
    """One result for consecutive phases: epochs numbered on, the last phase's kept weights and metrics.

    Each phase keeps its own best epoch (epoch 0 of a phase = the previous phase's best), so the final
    student is the last phase's best; ``best_epoch`` is its position in the numbering across phases.
    """
    history, offset, best_epoch = [], 0, 0
    for result in results:
        history += [dataclasses.replace(h, epoch=h.epoch + offset) for h in result.history]
        best_epoch = offset + result.best_epoch if result.best_epoch else best_epoch
        offset += result.epochs
    last = results[-1]
    return TrainResult(
        epochs=offset,
        best_epoch=best_epoch,
        metrics=last.metrics,
        history=tuple(history),
        seconds=sum(r.seconds for r in results),
    )
