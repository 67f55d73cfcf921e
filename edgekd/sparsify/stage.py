"""The sparsify stage (``prune.sparsity``): group-sparse training of the teacher's copy before it is pruned.

DepGraph's recipe (Fang et al., CVPR'23): train with a group-level norm penalty so the channel groups pruning
will remove are already near zero when it removes them, then prune by the learned group norms. The copy distils
from the frozen original teacher meanwhile (``distill.losses``), so it keeps the teacher's function while its
weak groups fade; the original teacher stays the teacher of the distill stage.

Recipe::

    prune:
      importance: group_l2          # ranks channels by the norms sparse training shaped
      sparsity: {epochs: 1, lr: 0.01}   # reg: auto (sized to the phase), or a number such as 5.0e-4
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import torch

from edgekd.context import RunContext, Stage, Upstream, section
from edgekd.distill import train_student
from edgekd.engine import distributed
from edgekd.errors import InputError
from edgekd.io import write_with
from edgekd.prune.oneshot import prune_model
from edgekd.recipe.schema import OptimConfig, Recipe
from edgekd.results import SparsifyResult
from edgekd.sparsify.regularizer import GroupRegularizer, PlannedRegularizer, near_zero_share, sized_reg

log = logging.getLogger("edgekd")


def run(ctx: RunContext, upstream: Upstream) -> SparsifyResult:
    """The stage: sparse-train a copy of ``ctx.teacher`` and write its weights to ``ctx.run.sparse_pt``."""
    cfg = ctx.recipe.prune.sparsity
    if distributed.world_size() > 1:
        raise InputError(
            "prune.sparsity trains in one process; run it without --nproc/torchrun (then resume with --nproc "
            "for the distillation) or set prune.sparsity.epochs: 0"
        )
    model = copy.deepcopy(ctx.teacher).requires_grad_(True)
    reg = cfg.reg if isinstance(cfg.reg, float) else sized_reg(cfg, _steps_per_epoch(ctx))
    log.info("sparsify: group-norm regularisation %.3g%s", reg, " (auto)" if cfg.reg == "auto" else "")
    example = ctx.data.example_input(1)
    if cfg.target == "pruned":
        regularizer = PlannedRegularizer(model, example, ctx.recipe.prune, reg, _planned_cut(ctx))
        log.info(
            "sparsify: penalising the %.0f%% of channels pruning will remove",
            100 * regularizer.penalised_share,
        )
    else:
        regularizer = GroupRegularizer(model, example, ctx.recipe.prune, reg)
    before = regularizer.group_norms()
    train = train_student(
        sparse_training_context(ctx),
        model,
        ctx.run.checkpoint("sparsify"),
        after_backward=regularizer.regularize,
    )
    after = regularizer.group_norms()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_with(ctx.run.sparse_pt, lambda tmp: torch.save(state, tmp))
    log.info(
        "sparsify: channel groups below 10%% of the median norm: %.1f%% -> %.1f%%",
        100 * near_zero_share(before),
        100 * near_zero_share(after),
    )
    return SparsifyResult(train, reg, before, after, penalised_share=regularizer.penalised_share)


def _planned_cut(ctx: RunContext) -> dict[str, int]:
    """``{layer name: channels removed}`` when the unpruned teacher is pruned to the recipe's goal now.

    Why the teacher as it is: growing regularisation fixes what to remove before the phase (Wang et al.,
    ICLR'21), and the phase then makes that choice come true (the penalised channels stay the weakest).
    """
    _, plan = prune_model(ctx.teacher, ctx.data, ctx.task, ctx.recipe.prune, ctx.seed)  # uniform (validated)
    return {layer.name: layer.before - layer.after for layer in plan.layers}


def _steps_per_epoch(ctx: RunContext) -> int:
    """Optimiser steps per epoch of the sparse phase: synthetic batches with distill.data_free, else the split's."""
    data_free = ctx.recipe.distill.data_free
    if data_free is not None:
        return data_free.steps_per_epoch
    return len(ctx.data.train_loader(ctx.recipe.data.batch_size, augment=False, seed=ctx.seed))


def sparse_training_context(ctx: RunContext) -> RunContext:
    """``ctx`` whose distill section trains with ``prune.sparsity``'s optimisation settings, in one phase.

    Why reuse the distillation set-up: sparse training *is* a distillation (the teacher's copy learns from the
    frozen teacher) plus a gradient-side penalty; one set-up keeps device, precision, data-free batches, teacher
    caching and checkpoints identical between the two.
    """
    sparsity = ctx.recipe.prune.sparsity
    optim = {name: getattr(sparsity, name) for name in OptimConfig.model_fields}
    distill = ctx.recipe.distill.model_copy(update={**optim, "phases": []})
    return dataclasses.replace(ctx, recipe=ctx.recipe.model_copy(update={"distill": distill}))


def applies(recipe: Recipe) -> bool:
    return recipe.prune.sparsity.epochs > 0


def inputs(ctx: RunContext, upstream: Upstream) -> dict[str, Any]:
    return {
        "seed": ctx.seed,
        "sparsity": section(ctx.recipe, "prune")["sparsity"],
        "ignored_layers": ctx.recipe.prune.ignored_layers,
        "distill_losses": section(ctx.recipe, "distill")["losses"],
    }


def info(ctx: RunContext, result: SparsifyResult) -> dict[str, Any]:
    return {
        "epochs": result.train.epochs,
        "best_epoch": result.train.best_epoch,
        "reg": result.reg,  # the strength used: prune.sparsity.reg, or what auto sized it to
        "reg_auto": ctx.recipe.prune.sparsity.reg == "auto",
        "target": ctx.recipe.prune.sparsity.target,  # all (DepGraph) or pruned (the planned cut only)
        "penalised_groups": result.penalised_share,  # target pruned: the share the planned cut removes
        "near_zero_groups_before": near_zero_share(result.norms_before),
        "near_zero_groups_after": near_zero_share(result.norms_after),
        # every channel group's L2 norm, in graph order (report plot group_norms.png): what the phase changed
        "group_norms_before": [float(f"{n:.4g}") for n in result.norms_before],
        "group_norms_after": [float(f"{n:.4g}") for n in result.norms_after],
        "resumed_checkpoint": ctx.resume_training,
    }


STAGE = Stage(
    name="sparsify",
    result=SparsifyResult,
    run=run,
    inputs=inputs,
    outputs=lambda ctx, result: [ctx.run.sparse_pt],
    info=info,
    trains=True,
    applies=applies,
)
