"""Group-norm regularisation with torch-pruning's own regulariser, and the group norms it drives to zero.

Why torch-pruning's: its ``GroupNormPruner`` regularises exactly the coupled groups (a conv's output channels
with the BatchNorm, the next layers' input channels and every residual branch tied to them) that the same
library's dependency graph later removes, so what the sparse phase shrinks is what pruning takes away. Writing
our own penalty would need a second copy of that dependency analysis.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.prune.layers import IGNORE_HINT, describe_error, head_names, resolve_ignored
from edgekd.recipe.schema import PruneConfig


class GroupRegularizer:
    """DepGraph's group-level sparsity penalty on ``model``'s prunable groups (Fang et al., CVPR'23, §3.3).

    Call :meth:`regularize` after every ``backward`` and before the optimizer step: it adds
    ``reg * gamma_g * w`` to the gradient of every parameter slice of group ``g``, with ``gamma`` growing from 1
    (most important group) to ``alpha`` (least important), so weak groups shrink fastest. The head and
    ``prune.ignored_layers`` are left alone, as pruning leaves them.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, cfg: PruneConfig) -> None:
        import torch_pruning as tp

        modules = dict(model.named_modules())
        ignored = resolve_ignored(model, cfg.ignored_layers)
        ignored += [modules[name] for name in head_names(model, example)]
        self.model, self.reg, self.alpha = model, cfg.sparsity.reg, cfg.sparsity.alpha
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

    def regularize(self) -> None:
        """Add the group penalty's gradient to ``param.grad`` (call between backward and the optimizer step)."""
        self._pruner.regularize(self.model, alpha=self.alpha)

    @torch.no_grad()
    def group_norms(self) -> tuple[float, ...]:
        """The L2 norm of every channel's group (all coupled parameter slices), in graph order.

        What the sparse phase changes and what ``group_l2`` importance then ranks channels by.
        """
        norms: list[float] = []
        for group in self._pruner._groups:  # the groups regularize() walks; no public accessor in tp 1.6
            importance = self._pruner.estimate_importance(group)
            if importance is not None:
                norms += importance.clamp_min(0).sqrt().tolist()
        return tuple(norms)


def near_zero_share(norms: Sequence[float], fraction: float = 0.1) -> float:
    """Share of channel groups whose norm is below ``fraction`` of the median: what sparse training produced."""
    if not norms:
        return 0.0
    threshold = fraction * statistics.median(norms)
    return sum(n < threshold for n in norms) / len(norms)
