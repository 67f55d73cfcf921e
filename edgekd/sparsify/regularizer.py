"""Group-norm regularisation with torch-pruning's own regulariser, and the group norms it drives to zero.

Why torch-pruning's: its ``GroupNormPruner`` regularises exactly the coupled groups (a conv's output channels
with the BatchNorm, the next layers' input channels and every residual branch tied to them) that the same
library's dependency graph later removes, so what the sparse phase shrinks is what pruning takes away. Writing
our own penalty would need a second copy of that dependency analysis.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch
from torch import nn

from edgekd.engine.optim import build_optimizer, build_scheduler
from edgekd.errors import InputError
from edgekd.prune.layers import IGNORE_HINT, describe_error, head_names, resolve_ignored
from edgekd.recipe.prune import SparsityConfig
from edgekd.recipe.schema import PruneConfig


class GroupRegularizer:
    """DepGraph's group-level sparsity penalty on ``model``'s prunable groups (Fang et al., CVPR'23, §3.3).

    Call :meth:`regularize` after every ``backward`` and before the optimizer step: it adds
    ``reg * gamma_g * w`` to the gradient of every parameter slice of group ``g``, with ``gamma`` growing from 1
    (most important group) to ``alpha`` (least important), so weak groups shrink fastest. The head and
    ``prune.ignored_layers`` are left alone, as pruning leaves them.
    """

    def __init__(
        self, model: nn.Module, example: torch.Tensor, cfg: PruneConfig, reg: float | None = None
    ) -> None:
        """``reg`` overrides ``cfg.sparsity.reg`` (required when that is ``auto``: see :func:`sized_reg`)."""
        import torch_pruning as tp

        reg = cfg.sparsity.reg if reg is None else reg
        if not isinstance(reg, float):
            raise ValueError("prune.sparsity.reg is auto: pass the sized strength (sized_reg) as reg")
        modules = dict(model.named_modules())
        ignored = resolve_ignored(model, cfg.ignored_layers)
        ignored += [modules[name] for name in head_names(model, example)]
        self.model, self.reg, self.alpha = model, reg, cfg.sparsity.alpha
        try:
            self._pruner = tp.pruner.GroupNormPruner(
                model,
                example,
                importance=tp.importance.GroupMagnitudeImportance(p=2),
                reg=self.reg,
                ignored_layers=ignored,
            )
        except Exception as exc:  # torch-pruning raises anything from tracing user code
            raise InputError(
                f"prune.sparsity: torch-pruning cannot trace the model ({describe_error(exc)}); {IGNORE_HINT}"
            ) from exc
        # The pruner's importance divides each group's scores by their mean (tp's default normalizer): what
        # per-layer pruning ranks by. What the penalty does to the weights themselves is read unnormalised.
        self._raw_norm = tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)

    def regularize(self) -> None:
        """Add the group penalty's gradient to ``param.grad`` (call between backward and the optimizer step)."""
        self._pruner.regularize(self.model, alpha=self.alpha)

    @torch.no_grad()
    def group_norms(self, raw: bool = False) -> tuple[float, ...]:
        """The L2 norm of every channel's group (all coupled parameter slices), in graph order.

        What the sparse phase changes and what ``group_l2`` importance then ranks channels by: relative to the
        mean of the channel's coupled group, as pruning compares them; ``raw`` leaves them unnormalised (the
        root mean square, over the group's layers, of the channel's slice norms), to follow the weights.
        """
        measure = self._raw_norm if raw else self._pruner.estimate_importance
        norms: list[float] = []
        for group in self._pruner._groups:  # the groups regularize() walks; no public accessor in tp 1.6
            importance = measure(group)
            if importance is not None:
                norms += importance.clamp_min(0).sqrt().tolist()
        return tuple(norms)


def sized_reg(cfg: SparsityConfig, steps_per_epoch: int) -> float:
    """The ``reg`` under which the least important group, on the penalty alone, keeps ``cfg.shrink_to`` of its
    norm by the end of the phase.

    Why: the penalty is a weight decay of ``reg * gamma`` on each group, so what it achieves depends on how many
    steps it gets and at which learning rates. DepGraph's ``reg`` of 5e-4 (Fang et al., CVPR'23) is sized for
    sparse phases of hundreds of epochs; a one-epoch phase at that strength left no ResNet-20 group near zero
    (benchmarks/RESULTS.md, issue 18, session 7; at the sized 8.7e-3, 2.9%: session 8). Under SGD with momentum ``m`` a
    gradient term ``g`` moves the weights by ``lr_t * g / (1 - m)`` per step once momentum has built up, so the
    weakest group (``gamma = alpha``) is scaled by ``prod(1 - lr_t * reg * alpha / (1 - m))``, about
    ``exp(-reg * alpha * sum(lr_t) / (1 - m))``; this solves that for ``shrink_to``. The learning rates are the
    phase's own schedule, stepped through on a throwaway optimiser.
    """
    param = nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([param], cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    total_lr = 0.0
    for _ in range(max(1, cfg.epochs * steps_per_epoch)):
        total_lr += optimizer.param_groups[0]["lr"]
        optimizer.step()  # no gradient: changes nothing, keeps the scheduler's step-order check quiet
        scheduler.step()
    return math.log(1 / cfg.shrink_to) * (1 - cfg.momentum) / (cfg.alpha * total_lr)


def near_zero_share(norms: Sequence[float], fraction: float = 0.1) -> float:
    """Share of channel groups whose norm is below ``fraction`` of the median: what sparse training produced."""
    if not norms:
        return 0.0
    threshold = fraction * statistics.median(norms)
    return sum(n < threshold for n in norms) / len(norms)
