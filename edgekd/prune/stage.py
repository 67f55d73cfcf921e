"""The prune stage: structural channel pruning of the teacher with torch-pruning's dependency graph.

The stage prunes the teacher (or its sparse-trained copy, :mod:`edgekd.sparsify`) in one shot, with one searched
channel ratio (:func:`~edgekd.prune.oneshot.prune_model`, ``allocation: uniform``) or per-group widths chosen by
importance per unit of cost (:mod:`edgekd.prune.allocate`, ``allocation: cost``, and always for a latency
budget), or progressively with distillation between the steps (:mod:`edgekd.prune.progressive`), and writes
the pruned student for the distill stage.

Recipe::

    prune: {importance: group_l2, target: macs, reduction: 0.74, tolerance: 0.01, iterative_steps: 8}
    prune: {target: macs, reduction: 0.5, allocation: cost}
    prune: {target: latency, reduction: 0.5, latency: {target: local, threads: 1}}
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.context import RunContext, Stage, Upstream, section
from edgekd.engine.run_student import save_run_student
from edgekd.errors import InputError
from edgekd.io import sha256_file
from edgekd.prune.allocate import CostAllocator, LatencyGoal
from edgekd.prune.oneshot import prune_model
from edgekd.prune.progressive import prune_progressively
from edgekd.results import CalibrateResult, LatencyBudget, PruneResult, SparsifyResult, to_dict

log = logging.getLogger(__name__)


def run(ctx: RunContext, upstream: Upstream) -> PruneResult:
    """The stage: prune ``ctx.teacher`` per ``recipe.prune`` and write the student to ``ctx.run.pruned_pt``.

    After sparse training (the sparsify stage) the sparse-trained copy is pruned instead; with
    ``prune.schedule: progressive`` pruning proceeds in steps with distillation between them.
    """
    source = _model_to_prune(ctx, upstream)
    cfg = ctx.recipe.prune
    if cfg.schedule == "progressive":
        student, result = prune_progressively(ctx, source)
    elif cfg.resolved_allocation == "cost":
        student, result = _prune_by_cost(ctx, upstream, source)
    else:
        student, result = prune_model(source, ctx.data, ctx.task, cfg, ctx.seed)
    save_run_student(ctx.run.pruned_pt, student, ctx, result, None)
    log.info(
        "pruned: MACs −%.1f%%, params −%.1f%%", 100 * result.macs_reduction, 100 * result.params_reduction
    )
    return result


def _prune_by_cost(ctx: RunContext, upstream: Upstream, source: nn.Module) -> tuple[nn.Module, PruneResult]:
    """Cost-aware allocation to the recipe's MACs, params or latency budget (:mod:`edgekd.prune.allocate`)."""
    cfg = ctx.recipe.prune
    allocator = CostAllocator(source, ctx.data, ctx.task, cfg, ctx.seed)
    if cfg.target != "latency":
        student, result, _ = allocator.prune()
        return student, result
    from edgekd.latency.feedback import aim_for, expected_ms

    model, cache_file = _latency_model(ctx, upstream)
    teacher_predicted = model.predict([(layer.cin, layer.cout) for layer in model.layers])
    teacher_ms = float(model.fit.get("teacher_ms") or teacher_predicted)
    budget_ms = cfg.latency.p50_ms or (1.0 - cfg.reduction) * teacher_ms
    if budget_ms >= teacher_ms:
        raise InputError(
            f"prune.latency.p50_ms: {budget_ms:g} ms is not below the teacher's {teacher_ms:.3g} ms on "
            f"{cfg.latency.target}; nothing to prune (lower it, or use prune.reduction)"
        )
    # The model's bias at the teacher (measured vs predicted), and at every student measured on the target
    # since, is assumed to hold near them: aim the raw prediction where the expected measurement is the budget.
    goal = LatencyGoal(model, aim_for(model, budget_ms))
    student, result, spent = allocator.prune(goal)
    predicted = spent.reached_total
    log.info(
        "prune: latency budget %.3f ms on %s (%d thread(s)); predicted %.3f ms (teacher %.3f ms measured)",
        budget_ms,
        cfg.latency.target,
        cfg.latency.threads,
        expected_ms(model, predicted),
        teacher_ms,
    )
    budget = LatencyBudget(
        target=cfg.latency.target,
        threads=cfg.latency.threads,
        budget_ms=budget_ms,
        predicted_ms=predicted,
        teacher_ms=teacher_ms,
        teacher_predicted_ms=teacher_predicted,
        error={k: model.error.get(k) for k in ("within_10pct", "mape", "n")},
        cache_key=Path(cache_file).stem,
        cache_file=cache_file,
    )
    return student, dataclasses.replace(result, latency=budget)


def _latency_model(ctx: RunContext, upstream: Upstream) -> tuple[Any, str]:
    """The latency model the calibrate stage chose, or (``edgekd prune`` alone) the cached or a new one."""
    from edgekd.latency import LatencyModel

    calibrated = upstream.find(CalibrateResult)
    if calibrated is not None:
        data = json.loads(Path(calibrated.cache_file).read_text())
        return LatencyModel.from_json(data), calibrated.cache_file
    from edgekd.latency.calibrate import ensure_latency_model
    from edgekd.latency.stage import calibration_config

    latency = ctx.recipe.prune.latency
    found = ensure_latency_model(
        ctx.teacher, ctx.data.example_input(1), latency.target, calibration_config(ctx.recipe)
    )
    return found.model, str(found.path)


def inputs(ctx: RunContext, upstream: Upstream) -> dict[str, Any]:
    found = {"seed": ctx.seed, "prune": section(ctx.recipe, "prune")}
    if upstream.find(SparsifyResult) is not None:
        found["sparse"] = sha256_file(ctx.run.sparse_pt)
    if ctx.recipe.prune.schedule == "progressive":  # distils between the steps
        found["distill"] = section(ctx.recipe, "distill")
    calibrated = upstream.find(CalibrateResult)
    if calibrated is not None:  # a recalibrated model allocates other widths
        found["latency_model"] = sha256_file(Path(calibrated.cache_file))
    return found


def info(ctx: RunContext, result: PruneResult) -> dict[str, Any]:
    """``stages.prune``: how channels were allocated and, for a latency budget, against which model."""
    entry: dict[str, Any] = {"allocation": result.allocation}
    if result.importance_kept is not None:
        entry["importance_kept"] = result.importance_kept
    if result.latency is not None:
        budget = to_dict(result.latency)
        entry["budget_ms"] = budget.pop("budget_ms")
        entry["predicted_ms"] = budget.pop("predicted_ms")
        entry["teacher_ms"] = budget.pop("teacher_ms")
        entry["latency_model"] = budget
    return entry


def _model_to_prune(ctx: RunContext, upstream: Upstream) -> nn.Module:
    """The teacher, or its sparse-trained copy when the sparsify stage ran (the teacher itself stays as is)."""
    if upstream.find(SparsifyResult) is None:
        return ctx.teacher
    model = copy.deepcopy(ctx.teacher)
    model.load_state_dict(torch.load(ctx.run.sparse_pt, map_location="cpu", weights_only=True))
    return model.eval()


STAGE = Stage(
    name="prune",
    result=PruneResult,
    run=run,
    inputs=inputs,
    outputs=lambda ctx, result: [ctx.run.pruned_pt],
    info=info,
)
