"""Prune to a MACs, params or latency budget by cost-aware, non-uniform allocation (``prune.allocation: cost``).

Why: the uniform search (:mod:`edgekd.prune.search`) prunes a fresh copy per probe and can only move every
layer together, so it is slow (DenseNet-121 at 224²: 26 probes, 9 minutes) and can step over a ±1% window;
it also cannot aim at latency. Here the model is traced once, every dependency group's channels are ranked
once with the recipe's importance criterion, the widths are chosen by the greedy knapsack of
:mod:`edgekd.prune.knapsack` (HALP, Shen et al., NeurIPS'22; NetAdapt, Yang et al., ECCV'18) against an
analytic cost (:mod:`edgekd.prune.budget`), and the model is pruned once. The MACs/params reached are then
counted with the one counter (:func:`~edgekd.models.complexity.count_complexity`); if the analytic model was
off by more than the tolerance, the allocation is redone once or twice with the goal shifted by the miss, and a
window the groups' steps jump over is bad input (as in the uniform search, ``round_to`` is first halved).
A latency budget is spent against the target's latency model instead (:class:`LatencyGoal`); its prediction
for the pruned model is exactly what :meth:`edgekd.latency.LatencyModel.predict_layers` says for the exported
student (the allocator maps each conv/linear module to its ONNX layer).

Recipe::

    prune: {target: macs, reduction: 0.5, allocation: cost}
    prune: {target: latency, reduction: 0.5, latency: {target: local, threads: 1}}   # allocation: cost implied

``iterative_steps`` and ``global_pruning`` do not apply: importance is scored once on the unpruned model and
every group competes for the one budget. ``round_to``, ``max_layer_ratio``, ``ignored_layers`` and the output
layers are respected as in the uniform path.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from edgekd.data.base import DataBundle
from edgekd.errors import EdgekdError, InputError
from edgekd.models.complexity import count_complexity
from edgekd.prune.budget import Cost, CountCost, LatencyCost, LayerShape, record_shapes
from edgekd.prune.importance import build_importance, needs_gradients
from edgekd.prune.knapsack import Allocation, Goal, GroupChoice, Touch, allocate, allowed_widths, cumulative
from edgekd.prune.layers import (
    IGNORE_HINT,
    ROOT_TYPES,
    channel_records,
    describe_error,
    forward_or_explain,
    layer_widths,
    output_layers,
    resolve_ignored,
)
from edgekd.prune.oneshot import CALIBRATION_BATCH_SIZE
from edgekd.recipe.schema import PruneConfig
from edgekd.results import PruneResult
from edgekd.tasks.base import Task

log = logging.getLogger("edgekd")

_INPUT_HINT = "check teacher.model (in_channels, num_classes) against the dataset"

LATENCY_LOOKAHEAD = 16  # channels a latency step may skip to land on a faster width (SIMD blocks are <= 16)
LATENCY_DETOUR = 2.0  # see Goal.detour: a latency budget is a ceiling, a slow width is not worth the window
CORRECTIONS = 2  # re-allocations when the counted MACs/params miss the analytic goal's window


@dataclass(frozen=True)
class LatencyGoal:
    """A latency budget: the target's latency model and the p50 (ms) the student's prediction must reach."""

    model: Any  # edgekd.latency.LatencyModel
    budget_ms: float


@dataclass(frozen=True)
class Spent:
    """What the allocator did, for the report: the goal, the (predicted or counted) result, the search."""

    allocation: Allocation
    round_to: int | None
    teacher_total: float  # MACs, params or predicted ms of the unpruned model
    goal_total: float
    reached_total: float  # counted MACs/params, or predicted ms
    attempts: int


class CostAllocator:
    """Prunes copies of one model to a budget by cost-aware allocation; the model itself is left untouched."""

    def __init__(self, model: nn.Module, data: DataBundle, task: Task, cfg: PruneConfig, seed: int) -> None:
        resolve_ignored(model, cfg.ignored_layers)  # fail fast on a typo, before any tracing
        self.model, self.task, self.cfg, self.seed = model, task, cfg, seed
        self.device = next(model.parameters(), torch.empty(0)).device
        self.example = data.example_input().to(self.device)
        # torch-pruning skips parameters without requires_grad: score and prune an unfrozen copy.
        self.template = copy.deepcopy(model).eval().requires_grad_(True)
        out = forward_or_explain(self.template, self.example, "the model", _INPUT_HINT)
        self.output_shape = tuple(task.output_tensor(out).shape)
        self.shapes = tuple(record_shapes(self.template, self.example).values())
        if needs_gradients(cfg.importance):
            _accumulate_gradients(self.template, data, task, cfg, seed)
        self.before = count_complexity(self.template, self.example)

    def prune(self, latency: LatencyGoal | None = None) -> tuple[nn.Module, PruneResult, Spent]:
        """A pruned copy at the recipe's MACs/params goal, or at ``latency.budget_ms`` predicted.

        Raises:
            InputError: a model torch-pruning cannot trace or prune, or a budget out of reach.
        """
        started, shift = time.perf_counter(), 0.0
        for attempt in range(1, CORRECTIONS + 2):
            pruned, spent, predicted = self._attempt(latency, shift)
            after = count_complexity(pruned, self.example)
            if latency is not None:
                break
            counted = after.macs if self.cfg.target == "macs" else after.params
            miss = counted - predicted  # what the analytic count left out (ops it does not model)
            if self._within(counted, spent.teacher_total):
                break
            if attempt > CORRECTIONS or abs(miss) < 0.25 * self.cfg.tolerance * spent.teacher_total:
                raise InputError(
                    f"prune: cost allocation removes {1 - counted / spent.teacher_total:.1%} of "
                    f"{self.cfg.target}, not {self.cfg.reduction:.1%} ± {self.cfg.tolerance:.1%} (the groups' "
                    "steps are coarser than the window); raise prune.tolerance or lower prune.round_to"
                )
            shift += miss
            log.info(
                "prune: counted %s %.2f%% off the analytic goal; re-allocating",
                self.cfg.target,
                100 * miss / spent.teacher_total,
            )
        reached = spent.reached_total if latency is not None else float(counted)
        spent = replace(spent, reached_total=reached, attempts=attempt)
        result = PruneResult(
            importance=self.cfg.importance,
            target=self.cfg.target,
            reduction_goal=1.0 - spent.goal_total / spent.teacher_total,
            macs_before=self.before.macs,
            macs_after=after.macs,
            params_before=self.before.params,
            params_after=after.params,
            steps=1,
            layers=channel_records(layer_widths(self.model), layer_widths(pruned)),
            seconds=time.perf_counter() - started,
            round_to=spent.round_to,
            allocation="cost",
            importance_kept=spent.allocation.importance_kept,
        )
        return pruned, result, spent

    def _within(self, counted: float, base: float) -> bool:
        return abs((1.0 - counted / base) - self.cfg.reduction) <= self.cfg.tolerance

    def _attempt(self, latency: LatencyGoal | None, shift: float) -> tuple[nn.Module, Spent, float]:
        """Trace a fresh copy, rank its groups, allocate against the cost, prune it once."""
        candidate = copy.deepcopy(self.template).eval()
        for source, target in zip(self.template.parameters(), candidate.parameters(), strict=True):
            target.grad = None if source.grad is None else source.grad.clone()  # deepcopy drops .grad
        graph = _trace(candidate, self.example)
        layers = self.shapes  # a deep copy runs at the same widths and sizes
        ignored = [
            m for layer in resolve_ignored(candidate, self.cfg.ignored_layers) for m in layer.modules()
        ]
        ignored += output_layers(graph)  # the heads keep their outputs, as in the uniform path
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            choices, roots = read_groups(graph, ignored, layers, self.cfg)
        cost, goal_total, teacher_total = self._cost(layers, latency)
        stop = cost.layer_sum_for(goal_total) - shift
        low = cost.layer_sum_for(goal_total - self.cfg.tolerance * teacher_total) - shift
        if latency is not None:
            goal = Goal(cost, stop, low, LATENCY_LOOKAHEAD, LATENCY_DETOUR)
        else:
            goal = Goal(cost, stop, low)
        allocation, round_to = self._allocate(choices, layers, goal)
        choices = [replace(c, widths=_widths(c.full, self.cfg, round_to)) for c in choices]
        _apply(graph, roots, choices, allocation.kept)
        for param in candidate.parameters():
            param.grad = None
        out = forward_or_explain(candidate, self.example, "the pruned model", IGNORE_HINT)
        if tuple(self.task.output_tensor(out).shape) != self.output_shape:
            raise EdgekdError("pruning changed the model output shape; report this as an edgekd bug")
        predicted = cost.total(allocation.layer_sum) + shift
        spent = Spent(allocation, round_to, teacher_total, goal_total, cost.total(allocation.layer_sum), 1)
        return candidate, spent, predicted

    def _cost(self, layers: Sequence[LayerShape], latency: LatencyGoal | None) -> tuple[Cost, float, float]:
        """``(cost, goal total, teacher total)`` in the cost's own units (MACs, params or ms)."""
        if latency is not None:
            cost: Cost = LatencyCost(latency.model, layers)
            teacher = cost.total(sum(cost.layer(i, s.cin, s.cout) for i, s in enumerate(layers)))
            return cost, latency.budget_ms, teacher
        counted = self.before.macs if self.cfg.target == "macs" else self.before.params
        plain = CountCost(self.cfg.target, tuple(layers))
        residual = counted - sum(plain.layer(i, s.cin, s.cout) for i, s in enumerate(layers))
        cost = CountCost(self.cfg.target, tuple(layers), residual)
        return cost, (1.0 - self.cfg.reduction) * counted, float(counted)

    def _allocate(
        self, choices: Sequence[GroupChoice], layers: Sequence[LayerShape], goal: Goal
    ) -> tuple[Allocation, int | None]:
        """Allocate at ``round_to``; when its coarse steps jump over the window, halve it (8 → 4 → 2 → none).

        Why the same fallback as the uniform search: the budget is the user's requirement, SIMD-friendly widths
        a preference; the report records the ``round_to`` actually used.
        """
        round_to = self.cfg.round_to
        while True:
            grid = [replace(c, widths=_widths(c.full, self.cfg, round_to)) for c in choices]
            allocation = allocate(grid, layers, goal)
            if allocation.layer_sum >= goal.low or not round_to or round_to <= 1:
                return allocation, round_to
            finer = round_to // 2 if round_to > 2 else None
            log.warning(
                "prune: with round_to %s the %s budget is overshot; retrying with prune.round_to %s",
                round_to,
                goal.cost.name,
                finer,
            )
            round_to = finer


def read_groups(
    graph: Any, ignored: Sequence[nn.Module], layers: Sequence[LayerShape], cfg: PruneConfig
) -> tuple[list[GroupChoice], list[tuple[nn.Module, Any]]]:
    """The prunable dependency groups of ``graph``, ranked by ``cfg.importance``, with their roots.

    A group is skipped where torch-pruning's own pruner skips it: the criterion gives no scores (``bn_scale``
    without a BatchNorm), or it holds attention (head-wise pruning is not allocated here).
    """
    importance = build_importance(cfg.importance)
    index = {shape.name: i for i, shape in enumerate(layers)}
    names = {id(m): n for n, m in graph.model.named_modules()}
    choices, roots = [], []
    for group in graph.get_all_groups(ignored_layers=list(ignored), root_module_types=list(ROOT_TYPES)):
        root, handler = group[0].dep.target.module, group[0].dep.handler
        full = len(group[0].idxs)
        if any(isinstance(dep.target.module, nn.MultiheadAttention) for dep, _ in group):
            continue
        scores = importance(group)
        if scores is None or len(scores) != full:
            continue
        widths = _widths(full, cfg, cfg.round_to)
        if len(widths) < 2:
            continue
        touches = _touches(graph, group, index, names, layers, full)
        weight = sum(1 for t in touches if layers[t.layer].kind != "norm")
        order, lost, mass = cumulative(scores.detach().cpu().tolist(), max(weight, 1))
        choices.append(GroupChoice(names.get(id(root), "?"), full, widths, order, lost, touches, mass))
        roots.append((root, handler))
    return choices, roots


def _touches(
    graph: Any,
    group: Any,
    index: dict[str, int],
    names: dict[int, str],
    layers: Sequence[LayerShape],
    full: int,
) -> tuple[Touch, ...]:
    """How many input/output channels of each costed layer one channel of ``group`` carries.

    Usually one; a linear layer after a flatten carries ``H*W`` inputs per channel. A depthwise conv or a norm
    has one width: whichever side the group reaches it from, it counts as its channels.
    """
    per: dict[int, list[float]] = {}
    for dep, idxs in group:
        i = index.get(names.get(id(dep.target.module), ""))
        if i is None:
            continue
        share = len(idxs) / full
        d = per.setdefault(i, [0.0, 0.0])
        if layers[i].kind in ("depthwise", "norm"):
            d[1] = max(d[1], share)
        elif graph.is_out_channel_pruning_fn(dep.handler):
            d[1] += share
        else:
            d[0] += share
    return tuple(Touch(i, d_in, d_out) for i, (d_in, d_out) in sorted(per.items()))


def _widths(full: int, cfg: PruneConfig, round_to: int | None) -> tuple[int, ...]:
    min_keep = max(1, math.ceil(full * (1.0 - cfg.max_layer_ratio) - 1e-9))
    return allowed_widths(full, min_keep, round_to)


def _apply(
    graph: Any, roots: Sequence[tuple[nn.Module, Any]], choices: Sequence[GroupChoice], kept: Sequence[int]
) -> None:
    """Prune each group to its kept width, removing its least important channels (root indices stay valid:
    a root's output channels belong to its group alone)."""
    for (root, handler), choice, width in zip(roots, choices, kept, strict=True):
        if width >= choice.full:
            continue
        try:
            group = graph.get_pruning_group(root, handler, list(choice.order[: choice.full - width]))
            if not graph.check_pruning_group(group):
                raise EdgekdError(f"group '{choice.name}' would lose every channel of a layer")
            group.prune()
        except EdgekdError:
            raise
        except Exception as exc:  # torch-pruning raises anything on user code
            raise InputError(
                f"torch-pruning failed to prune the model ({describe_error(exc)}); {IGNORE_HINT}"
            ) from exc


def _trace(model: nn.Module, example: torch.Tensor) -> Any:
    import torch_pruning as tp

    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception as exc:  # torch-pruning raises anything from tracing user code
        raise InputError(
            f"torch-pruning cannot trace the model ({describe_error(exc)}); {IGNORE_HINT}"
        ) from exc


def _accumulate_gradients(
    model: nn.Module, data: DataBundle, task: Task, cfg: PruneConfig, seed: int
) -> None:
    """``param.grad`` from ``cfg.calibration_batches`` training batches, for gradient criteria (``taylor``).

    The same calibration as the uniform path's first step (eval mode: BatchNorm statistics stay put).
    """
    loader = data.train_loader(CALIBRATION_BATCH_SIZE, augment=False, seed=seed)
    batches = list(itertools.islice(loader, cfg.calibration_batches))
    device = next(model.parameters()).device
    criterion = task.criterion()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for images, targets in batches:
            out = task.output_tensor(model(images.to(device)))
            (criterion(out, targets.to(device)) / len(batches)).backward()
