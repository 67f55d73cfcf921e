"""Group-norm regularisation with torch-pruning's own regulariser, and the group norms it drives to zero.

Why torch-pruning's: its ``GroupNormPruner`` regularises exactly the coupled groups (a conv's output channels
with the BatchNorm, the next layers' input channels and every residual branch tied to them) that the same
library's dependency graph later removes, so what the sparse phase shrinks is what pruning takes away. Writing
our own penalty would need a second copy of that dependency analysis.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

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

    # None: every group is penalised (PlannedRegularizer sets the share of groups it works on)
    penalised_share: float | None = None

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


class PlannedRegularizer(GroupRegularizer):
    """A penalty on the channels pruning will remove, and on nothing else (``prune.sparsity.target: pruned``).

    Why: DepGraph's penalty (:class:`GroupRegularizer`) shrinks every group, weakest fastest, and leaves pruning
    to find the weak ones afterwards; over a one-epoch phase it drove 2.9% of ResNet-20's groups near zero while
    a -75% MACs cut removes about half of the channels (benchmarks/RESULTS.md, issue 18, session 8). Growing
    regularisation (Wang et al., "Neural Pruning via Growing Regularization", ICLR'21) instead fixes the channels
    to remove first and penalises exactly those, so the network moves what they carry into the channels it
    keeps before they are cut. ``removed`` is that plan: ``{root layer name: channels pruning removes}``; within
    each coupled group the weakest channels by group L2 norm are chosen (what ``group_l2`` importance ranks by,
    so after the phase pruning takes the same ones). Each chosen channel's slices (the conv's or linear's output
    rows, its bias, the BatchNorm's weight and bias, the next layers' input columns) get a plain weight decay of
    ``reg``; the masks are built once, so a step costs one multiply-add per parameter, not a walk over the groups.
    """

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        cfg: PruneConfig,
        reg: float,
        removed: Mapping[str, int],
    ) -> None:
        super().__init__(model, example, cfg, reg)
        names = {module: name for name, module in model.named_modules()}
        self._masks: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}
        chosen = total = 0
        for group in self._pruner._groups:
            norms = self._raw_norm(group)
            if norms is None:
                continue
            count = removed.get(names[group[0].dep.target.module], 0)
            weakest = set(norms.argsort()[:count].tolist()) if count > 0 else set()
            for item in group:
                self._mark(item, weakest)
            chosen, total = chosen + len(weakest), total + len(norms)
        # the share of channel groups the penalty works on: about what the plan removes
        self.penalised_share = chosen / max(1, total)

    def _mark(self, item: object, weakest: set[int]) -> None:
        """Set the mask of every parameter slice of ``item`` (one dependency of a group) that a chosen channel
        owns: the same slices torch-pruning's ``regularize`` walks, and biases too (a constant that is cut also
        changes the function)."""
        from torch_pruning.pruner import function

        layer, handler = item.dep.target.module, item.dep.handler
        positions = [i for i, root in zip(item.idxs, item.root_idxs, strict=True) if root in weakest]
        if not positions:  # also: nothing chosen in this group
            return
        if handler in (function.prune_conv_out_channels, function.prune_linear_out_channels):
            slices = [(layer.weight, 0), (layer.bias, 0)]
        elif handler in (function.prune_conv_in_channels, function.prune_linear_in_channels):
            # depthwise: its out-channel dependency holds the same weights
            if getattr(layer, "groups", 1) > 1:
                return
            slices = [(layer.weight, 1)]
        elif handler == function.prune_batchnorm_out_channels and layer.affine:
            slices = [(layer.weight, 0), (layer.bias, 0)]
        else:
            return
        index = torch.tensor(positions, device=layer.weight.device)
        for param, dim in slices:
            if param is not None:
                _, mask = self._masks.setdefault(id(param), (param, torch.zeros_like(param)))
                mask.index_fill_(dim, index, 1.0)

    @torch.no_grad()
    def regularize(self) -> None:
        """Add ``reg * w`` to the gradient of every chosen channel's slices (between backward and step)."""
        for param, mask in self._masks.values():
            if param.grad is not None:
                param.grad.addcmul_(param, mask, value=self.reg)


def sized_reg(cfg: SparsityConfig, steps_per_epoch: int) -> float:
    """The weakest ``reg`` under which the most penalised weights, on the penalty alone, keep at most
    ``cfg.shrink_to`` of their size by the end of the phase.

    Why: the penalty is a weight decay of ``reg * gamma`` on each group (``gamma`` up to ``alpha`` with
    ``target: all``, 1 with ``target: pruned``), so what it achieves depends on how many steps it gets and at
    which learning rates. DepGraph's ``reg`` of 5e-4 (Fang et al., CVPR'23) is sized for sparse phases of hundreds
    of epochs; a one-epoch phase at that strength left no ResNet-20 group near zero (benchmarks/RESULTS.md, issue
    18, session 7; sized, 2.9%: session 8). The closed form ``exp(-reg * gamma * sum(lr_t) / (1 - m))`` holds
    only once momentum has built up and while ``lr * reg * gamma`` is far below ``(1 - m)^2``: a 100-step phase
    sized by it drove the weights to 4e-6 of their size (momentum overshoots), a 4-step one left them at 0.35.
    So the phase is simulated instead: one weight per candidate strength (a log grid from 1e-6 to 100)
    goes through the phase's own optimiser and schedule under that decay alone (SGD is elementwise, so the
    candidates do not interact), and the weakest candidate that ends within ``shrink_to`` is returned.
    """
    steps = max(1, cfg.epochs * steps_per_epoch)
    gamma = cfg.alpha if cfg.target == "all" else 1.0
    candidates = torch.logspace(-6, 2, 801, dtype=torch.float64)  # 2.3% apart
    weights = nn.Parameter(torch.ones_like(candidates))
    optimizer = build_optimizer([weights], cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    for _ in range(steps):
        weights.grad = candidates * gamma * weights.detach()
        optimizer.step()
        scheduler.step()
    reached = torch.nonzero(weights.detach().abs() <= cfg.shrink_to).flatten()
    if len(reached) == 0:
        raise InputError(
            f"prune.sparsity: no reg up to {candidates[-1]:g} shrinks the penalised weights to shrink_to "
            f"{cfg.shrink_to:g} in {steps} steps at lr {cfg.lr:g}; give reg a number, more epochs or a higher lr"
        )
    return float(candidates[reached[0]])


def near_zero_share(norms: Sequence[float], fraction: float = 0.1) -> float:
    """Share of channel groups whose norm is below ``fraction`` of the median: what sparse training produced."""
    if not norms:
        return 0.0
    threshold = fraction * statistics.median(norms)
    return sum(n < threshold for n in norms) / len(norms)
