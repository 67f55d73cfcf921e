"""The prune stage: structural channel pruning of the teacher with torch-pruning's dependency graph.

The stage prunes the teacher (or its sparse-trained copy, :mod:`edgekd.sparsify`) in one shot
(:func:`~edgekd.prune.oneshot.prune_model`) or progressively with distillation between the steps
(:mod:`edgekd.prune.progressive`), and writes the pruned student for the distill stage.

Recipe::

    prune: {importance: group_l2, target: macs, reduction: 0.74, tolerance: 0.01, iterative_steps: 8}
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from edgekd.context import RunContext, Stage, Upstream, section
from edgekd.engine.run_student import save_run_student
from edgekd.io import sha256_file
from edgekd.prune.oneshot import prune_model
from edgekd.prune.progressive import prune_progressively
from edgekd.results import PruneResult, SparsifyResult

log = logging.getLogger(__name__)


def run(ctx: RunContext, upstream: Upstream) -> PruneResult:
    """The stage: prune ``ctx.teacher`` per ``recipe.prune`` and write the student to ``ctx.run.pruned_pt``.

    After sparse training (the sparsify stage) the sparse-trained copy is pruned instead; with
    ``prune.schedule: progressive`` pruning proceeds in steps with distillation between them.
    """
    source = _model_to_prune(ctx, upstream)
    if ctx.recipe.prune.schedule == "progressive":
        student, result = prune_progressively(ctx, source)
    else:
        student, result = prune_model(source, ctx.data, ctx.task, ctx.recipe.prune, ctx.seed)
    save_run_student(ctx.run.pruned_pt, student, ctx, result, None)
    log.info(
        "pruned: MACs −%.1f%%, params −%.1f%%", 100 * result.macs_reduction, 100 * result.params_reduction
    )
    return result


def inputs(ctx: RunContext, upstream: Upstream) -> dict[str, Any]:
    found = {"seed": ctx.seed, "prune": section(ctx.recipe, "prune")}
    if upstream.find(SparsifyResult) is not None:
        found["sparse"] = sha256_file(ctx.run.sparse_pt)
    if ctx.recipe.prune.schedule == "progressive":  # distils between the steps
        found["distill"] = section(ctx.recipe, "distill")
    return found


def _model_to_prune(ctx: RunContext, upstream: Upstream) -> nn.Module:
    """The teacher, or its sparse-trained copy when the sparsify stage ran (the teacher itself stays as is)."""
    if upstream.find(SparsifyResult) is None:
        return ctx.teacher
    model = copy.deepcopy(ctx.teacher)
    model.load_state_dict(torch.load(ctx.run.sparse_pt, map_location="cpu", weights_only=True))
    return model.eval()


STAGE = Stage(
    name="prune", result=PruneResult, run=run, inputs=inputs, outputs=lambda ctx, result: [ctx.run.pruned_pt]
)
