"""The distill stage: train the pruned student against the frozen teacher(s) with the recipe's losses.

``train_student`` is the one distillation set-up: ``compress``'s stage (:func:`run`), ``edgekd distill`` and the
other ranks of a distributed run all call it with the run's context, so they train exactly the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from edgekd.context import RunContext, Stage, Upstream, section
from edgekd.distill.data_free import SyntheticBatches, build_synthetic_batches, record
from edgekd.distill.objective import DistillObjective
from edgekd.engine import distributed
from edgekd.engine.device import distill_device, placed
from edgekd.engine.run_student import load_run_student, save_run_student
from edgekd.engine.summary import summarize
from edgekd.engine.trainer import FitOptions, fit, seed_everything
from edgekd.io import sha256_file
from edgekd.recipe.schema import DistillConfig, DistillPhase
from edgekd.results import DistillResult, PruneResult, TrainResult, to_dict

log = logging.getLogger("edgekd")


def run(ctx: RunContext, upstream: Upstream) -> DistillResult:
    """The stage: distil ``state/pruned.pt`` into ``student.pt`` and measure the result.

    Distillation always starts from the pruned student reloaded from disk, in a fresh run as in a resumed one
    (and on every rank of a distributed run), so all of them train exactly the same model.
    """
    student = load_run_student(ctx.run.pruned_pt, ctx.recipe)
    batches = build_synthetic_batches(ctx, student) if ctx.recipe.distill.data_free else None
    train = train_student(ctx, student, ctx.run.checkpoint("distill"), batches)
    save_run_student(ctx.run.student_pt, student, ctx, upstream.get(PruneResult), train)
    summary = summarize(student, ctx.data, ctx.task, ctx.recipe.data.eval_batch_size, "the distilled student")
    data_free = record.finish(ctx, batches) if batches is not None else None
    return DistillResult(train=train, student=summary, data_free=data_free)


def inputs(ctx: RunContext, upstream: Upstream) -> dict[str, Any]:
    extra = [t.checkpoint and sha256_file(t.checkpoint) for t in ctx.recipe.distill.extra_teachers]
    return {
        "pruned": sha256_file(ctx.run.pruned_pt),
        "distill": section(ctx.recipe, "distill"),
        "extra_teachers": extra,
    }


def info(ctx: RunContext, result: DistillResult) -> dict[str, Any]:
    return {
        "epochs": result.train.epochs,
        "best_epoch": result.train.best_epoch,
        "resumed_checkpoint": ctx.resume_training,
        "ranks": distributed.world_size(),  # data-parallel processes (rounding differs with the count)
        "teachers": len(ctx.teachers),
        "device": str(distill_device(ctx.recipe).device),  # where this process trained (rank 0's device)
        "precision": ctx.recipe.distill.precision,
        **({"data_free": to_dict(result.data_free)} if result.data_free else {}),  # no training images used
    }


STAGE = Stage(
    name="distill",
    result=DistillResult,
    run=run,
    inputs=inputs,
    outputs=lambda ctx, result: [ctx.run.student_pt],
    info=info,
    data_parallel=True,
    trains=True,
)


def train_student(
    ctx: RunContext,
    student: nn.Module,
    checkpoint: Path | None = None,
    batches: SyntheticBatches | None = None,
    after_backward: Callable[[], None] | None = None,
) -> TrainResult:
    """Distil into ``student`` in place with ``ctx.recipe.distill``; on return it holds the best-evaluated weights.

    With ``distill.phases`` the phases run in order, each a full training run (own losses, epochs, optimizer and
    schedule) starting from the previous phase's best student; otherwise the section itself is the one phase.
    The result's history numbers epochs across phases, so the report shows one continuous curve.

    Args:
        ctx: the run's context: its teachers (the unpruned original first), data, task and recipe.
        student: the pruned model (trainable).
        checkpoint: per-epoch checkpoint path (``state/distill-last.pt``); training continues from it when
            ``ctx.resume_training``. Later phases use ``distill-p2-last.pt``, ``distill-p3-last.pt``… beside it.
        batches: with ``distill.data_free``, the synthetic batches to train on (built against ``student`` by
            :func:`~edgekd.distill.data_free.build_synthetic_batches` when not given); the training split is
            then never read.
        after_backward: called between each backward and optimizer step (sparse training's regulariser). Such
            training shapes the weights rather than chasing accuracy, so it keeps its last epoch: selected on
            validation, the un-regularised incoming weights (epoch 0) would win and undo it.
    """
    cfg = ctx.recipe.distill
    own = cfg.data_free is not None and batches is None
    if own:
        batches = build_synthetic_batches(ctx, student)
    phases: list[DistillConfig | DistillPhase] = list(cfg.phases) or [cfg]
    paths = [phase_checkpoint(checkpoint, i) for i in range(len(phases))]
    resume = ctx.resume_training and checkpoint is not None
    if not resume:  # a later phase's file may be left from a run with other inputs: never resume from it
        for path in paths[1:]:
            if path is not None:
                path.unlink(missing_ok=True)
    log.info("distill: training on %s", distill_device(ctx.recipe).describe())
    results: list[TrainResult] = []
    for i, phase in enumerate(phases):
        review = (frozen_copy(student),) if getattr(phase, "self_review", False) and results else ()
        label = getattr(phase, "name", "") or (f"phase{i + 1}" if len(phases) > 1 else "distill")
        if len(phases) > 1:
            losses = ", ".join(s.name for s in phase.losses)
            log.info("distill %s (%d of %d): %s", label, i + 1, len(phases), losses)
        job = _Phase(phase, label, (*ctx.teachers, *review), paths[i], resume, batches, after_backward)
        results.append(_run_phase(ctx, student, job))
    if own and batches is not None:
        batches.close()  # its hooks leave the teacher; a caller that passed batches closes them itself
    return results[0] if len(results) == 1 else _chain(results)


def phase_checkpoint(checkpoint: Path | None, index: int) -> Path | None:
    """Epoch checkpoint of phase ``index`` (0: the stage's own file, so single-phase runs are unchanged)."""
    if checkpoint is None or index == 0:
        return checkpoint
    return checkpoint.with_name(checkpoint.name.replace("-last", f"-p{index + 1}-last"))


def frozen_copy(model: nn.Module) -> nn.Module:
    """A teacher-ready copy of ``model``: eval mode, no gradients, independent of further training."""
    return copy.deepcopy(model).eval().requires_grad_(False)


@dataclass(frozen=True)
class _Phase:
    """One phase's own settings: its section, log label, teachers, epoch checkpoint and whether to resume."""

    cfg: DistillConfig | DistillPhase
    label: str
    teachers: tuple[nn.Module, ...]
    checkpoint: Path | None
    resume: bool
    batches: SyntheticBatches | None = None  # distill.data_free: synthetic batches, no training split
    after_backward: Callable[[], None] | None = None  # e.g. sparse training's group-norm regulariser


def _run_phase(ctx: RunContext, student: nn.Module, job: _Phase) -> TrainResult:
    cfg, data, data_cfg, seed = ctx.recipe.distill, ctx.data, ctx.recipe.data, ctx.seed
    device = distill_device(ctx.recipe)
    seed_everything(seed)
    student.requires_grad_(True)  # the prune stage hands over a frozen copy
    with placed([student, *job.teachers], device.device):  # the teachers go back to the CPU afterwards
        objective = DistillObjective(
            student,
            list(job.teachers),
            job.cfg.losses,
            ctx.task,
            data.num_classes,
            data.example_input(2).to(device.device),
            fuse_teachers=cfg.fuse_teacher,
        )
        if device.compile:
            objective.compile_student()
        try:
            if job.batches is not None:  # data-free: no training split, so no teacher-output cache either
                data = record.training_view(ctx)
            elif not data_cfg.augment and cfg.teacher_cache_mib > 0 and job.cfg.epochs > 0:
                # same images every epoch: run the teachers once (batches of the training size, in split order)
                in_order = data.train_loader(data_cfg.batch_size, augment=False, seed=seed, shuffle=False)
                objective.cache_teacher(in_order, int(cfg.teacher_cache_mib * 2**20))
            options = FitOptions(
                optim=job.cfg,
                batch_size=data_cfg.batch_size,
                augment=data_cfg.augment,
                seed=seed,
                desc=job.label,
                eval_batch_size=data_cfg.eval_batch_size,
                checkpoint=job.checkpoint,
                resume=job.resume,
                device=device,
                batches=job.batches,
                after_backward=job.after_backward,
                keep_last=job.after_backward is not None,  # regularised training: see train_student
            )
            return fit(student, data, ctx.task, objective, options, extra_modules=objective.losses)
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
