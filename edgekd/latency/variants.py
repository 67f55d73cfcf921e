"""Whole-model variants at other widths, pruned with torch-pruning and exported as edgekd exports them.

Two uses: a few *uniform* variants (every dependency group kept at the same ratio) fit the whole-graph term of
the latency model; *random* variants (each group its own ratio, some rounded to multiples of 8, some not) are
the held-out set its error is measured on. Both are what pruning can produce: torch-pruning's dependency
groups keep coupled layers (residual adds, depthwise pairs) consistent, and the output layer keeps its width,
as ``edgekd prune`` does. Weights are irrelevant to latency, so channels are simply cut (the first ones kept).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgekd.export.onnx_export import torch_to_onnx
from edgekd.export.simplify import simplify_model
from edgekd.latency.kinds import OPSET

ROOTS = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class WidthPlan:
    """How one variant keeps channels: ``keep(group_index) -> ratio``; ``round_to`` rounds kept widths."""

    keep: Callable[[int], float]
    round_to: int | None = None


def uniform(ratio: float, round_to: int | None = 8) -> WidthPlan:
    return WidthPlan(lambda _i: ratio, round_to)


def random_plan(seed: int, low: float = 0.3) -> WidthPlan:
    """Each group keeps a random ratio in ``[low, 1]``; half the plans round widths to 8, half do not."""
    rng = random.Random(seed)
    ratios: dict[int, float] = {}
    round_to = 8 if rng.random() < 0.5 else None

    def keep(i: int) -> float:
        return ratios.setdefault(i, rng.uniform(low, 1.0))

    return WidthPlan(keep, round_to)


def output_modules(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The conv/linear layers that run last (the head): their outputs are never pruned, as in ``edgekd prune``."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: order.append(m))
        for m in model.modules()
        if isinstance(m, ROOTS)
    ]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    return order[-1:]


def prune_widths(model: nn.Module, example: torch.Tensor, plan: WidthPlan) -> nn.Module:
    """A pruned copy of ``model``: dependency group ``i`` keeps ``plan.keep(i)`` of its channels."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=example)
    ignored = output_modules(pruned, example)
    groups = list(graph.get_all_groups(ignored_layers=ignored, root_module_types=list(ROOTS)))
    for index, group in enumerate(groups):
        root = group[0].dep.target.module
        full = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
        keep = max(1, int(round(full * plan.keep(index))))
        if plan.round_to and full >= plan.round_to:
            keep = max(plan.round_to, int(round(keep / plan.round_to)) * plan.round_to)
        if keep >= full:
            continue
        handler = group[0].dep.handler
        group = graph.get_pruning_group(root, handler, list(range(keep, full)))
        if graph.check_pruning_group(group):
            group.prune()
    return pruned


def to_onnx(model: nn.Module, example: torch.Tensor) -> object:
    """``model`` as edgekd's export writes it (static batch, BatchNorm folded, onnxsim-simplified)."""
    proto = torch_to_onnx(model, example, OPSET, dynamic_batch=False)
    simplified, _note = simplify_model(proto, example.numpy())
    return simplified
