"""Progressive prune-and-distill (``prune.schedule: progressive``): prune a share, recover, prune again.

Why: cutting 75-90% of the MACs in one shot removes capacity the student could have absorbed gradually.
Pruning an equal share of what remains in each of ``steps`` steps, with a short distillation from the unpruned
teacher between steps, lets each pruning decision see weights that already adapted to the previous one (the
gradual schedule of Zhu & Gupta, 2017, and NetAdapt's prune-then-short-tune loop, ECCV'18). With
``assistant: true`` the student of the previous step teaches the next one instead (teacher-assistant KD,
Mirzadeh et al., AAAI'20), a smaller capacity gap per step; the final distillation still learns from the teacher.

Recipe::

    prune: {target: macs, reduction: 0.9, schedule: progressive, progressive: {steps: 3, epochs: 1}}
"""

from __future__ import annotations

import dataclasses
import logging
import time

from torch import nn

from edgekd.context import RunContext
from edgekd.distill import train_student
from edgekd.distill.stage import frozen_copy
from edgekd.engine import distributed
from edgekd.errors import InputError
from edgekd.models.complexity import count_complexity
from edgekd.prune.layers import channel_records, layer_widths
from edgekd.prune.oneshot import prune_model
from edgekd.results import PruneResult

log = logging.getLogger("edgekd")


def prune_progressively(ctx: RunContext, model: nn.Module) -> tuple[nn.Module, PruneResult]:
    """Prune a copy of ``model`` to ``ctx.recipe.prune``'s goal in steps, distilling between them.

    Each step removes an equal fraction of what is left (``keep = (1 - reduction) ** (k / steps)`` after step
    ``k``), measured against ``model``'s own MACs or params, so the last step lands on the recipe's goal within
    its tolerance. Steps before the last are followed by ``progressive.epochs`` of distillation with the recipe's
    distill section (losses, optimizer, schedule); the distill stage then trains the final student.

    Returns:
        The final pruned copy and one :class:`PruneResult` from ``model`` to it (``seconds`` includes the
        distillation between the steps).
    """
    cfg, started = ctx.recipe.prune, time.perf_counter()
    if distributed.world_size() > 1:
        raise InputError("prune.schedule: progressive trains in one process; run it without --nproc/torchrun")
    base = _measure(model, ctx, cfg.target)
    student, results = model, []
    for step in range(1, cfg.progressive.steps + 1):
        kept = _measure(student, ctx, cfg.target) / base  # what the previous steps actually left
        goal_keep = (1.0 - cfg.reduction) ** (step / cfg.progressive.steps)
        step_cfg = cfg.model_copy(
            update={
                "reduction": 1.0 - goal_keep / kept,
                "tolerance": _step_tolerance(cfg.tolerance, kept, last=step == cfg.progressive.steps),
                "schedule": "oneshot",
            }
        )
        log.info(
            "prune step %d of %d: keep %.1f%% of the teacher's %s",
            step,
            cfg.progressive.steps,
            100 * goal_keep,
            cfg.target,
        )
        previous = student
        student, result = prune_model(previous, ctx.data, ctx.task, step_cfg, ctx.seed)
        results.append(result)
        if step < cfg.progressive.steps and cfg.progressive.epochs > 0:
            assistant = cfg.progressive.assistant and step > 1
            teachers = (frozen_copy(previous),) if assistant else ctx.teachers
            train_student(_step_context(ctx, teachers), student)
            student = student.eval().requires_grad_(False)
    first, last = results[0], results[-1]
    return student, dataclasses.replace(
        last,
        reduction_goal=cfg.reduction,
        macs_before=first.macs_before,
        params_before=first.params_before,
        layers=channel_records(layer_widths(model), layer_widths(student)),
        seconds=time.perf_counter() - started,
    )


def _step_tolerance(tolerance: float, kept: float, last: bool) -> float:
    """The step's tolerance, relative to the student it prunes (``kept`` of the teacher is left).

    Only the last step must land within the recipe's tolerance of the teacher's total; the steps before it may
    miss their share by up to 5% of the total (the next step corrects for what they actually left), so their
    search need not give up SIMD-friendly rounding for an intermediate width nobody ships.
    """
    return min(0.49, (tolerance if last else max(tolerance, 0.05)) / kept)


def _measure(model: nn.Module, ctx: RunContext, target: str) -> int:
    cost = count_complexity(model.eval(), ctx.data.example_input(1))
    return cost.macs if target == "macs" else cost.params


def _step_context(ctx: RunContext, teachers: tuple[nn.Module, ...]) -> RunContext:
    """``ctx`` for the distillation after one step: ``progressive.epochs`` in one phase, from ``teachers``."""
    distill = ctx.recipe.distill.model_copy(
        update={"epochs": ctx.recipe.prune.progressive.epochs, "phases": []}
    )
    recipe = ctx.recipe.model_copy(update={"distill": distill})
    return dataclasses.replace(ctx, recipe=recipe, teachers=teachers, resume_training=False)
