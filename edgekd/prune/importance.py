"""Channel-importance criteria: which channels of a coupled group torch-pruning removes first.

Every entry is a thin builder around a torch-pruning ``Importance`` class (``tp.importance``): the library
owns the scoring maths, edgekd owns the name a recipe uses, the documentation and whether the criterion needs
gradients. Criteria that need gradients (``taylor``) get them from a few calibration batches of real training
data, scored with the task's own criterion, before every pruning step (see :mod:`edgekd.prune.stage`).

Recipe::

    prune: {importance: group_l2}        # default
    prune: {importance: taylor, calibration_batches: 4}

>>> sorted(IMPORTANCES)[:3]
['bn_scale', 'fpgm', 'group_l1']
>>> needs_gradients("taylor"), needs_gradients("group_l2")
(True, False)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgekd.registry import Registry

Builder = Callable[[], Any]  # () -> torch_pruning.importance.Importance

IMPORTANCES: Registry[Builder] = Registry("importance")
_GRADIENT_CRITERIA: set[str] = set()


def _importance(name: str, gradients: bool = False) -> Callable[[Builder], Builder]:
    """Register a builder under ``name`` and remember whether its criterion reads ``param.grad``."""

    def decorator(builder: Builder) -> Builder:
        IMPORTANCES.register(name)(builder)
        builder.needs_gradients = gradients  # type: ignore[attr-defined]
        if gradients:
            _GRADIENT_CRITERIA.add(name)
        return builder

    return decorator


def needs_gradients(name: str) -> bool:
    """Whether criterion ``name`` scores channels from gradients (calibration backward passes needed)."""
    IMPORTANCES.get(name)  # unknown names raise with a did-you-mean
    return name in _GRADIENT_CRITERIA


def build_importance(name: str) -> Any:
    """Instantiate the torch-pruning importance object of criterion ``name``."""
    return IMPORTANCES.get(name)()


@_importance("group_l1")
def group_l1() -> Any:
    """Group L1 norm: mean |w| over every layer coupled to a channel (Fang et al., DepGraph, CVPR 2023,
    arXiv:2301.12900; per-layer L1 after Li et al., 2017, arXiv:1608.08710).

    Recipe: ``prune: {importance: group_l1}``
    """
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=1)


@_importance("group_l2")
def group_l2() -> Any:
    """Group L2 norm of all weights coupled to a channel, mean-normalised per group (Fang et al., DepGraph,
    CVPR 2023, arXiv:2301.12900). The default: data-free, cheap and a strong baseline.

    Recipe: ``prune: {importance: group_l2}``
    """
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=2)


@_importance("bn_scale")
def bn_scale() -> Any:
    """|gamma| of the BatchNorm layers in a group (Liu et al., Network Slimming, ICCV 2017, arXiv:1708.06519).
    Groups without a BatchNorm are skipped (not pruned).

    Recipe: ``prune: {importance: bn_scale}``
    """
    import torch_pruning as tp

    return tp.importance.BNScaleImportance()


@_importance("taylor", gradients=True)
def taylor() -> Any:
    """First-order Taylor estimate |w · dL/dw| summed over a group (Molchanov et al., CVPR 2019,
    arXiv:1906.10771). Gradients come from ``calibration_batches`` batches of training data and the task's
    criterion, recomputed before each of the ``iterative_steps``.

    Recipe: ``prune: {importance: taylor, calibration_batches: 4}``
    """
    import torch_pruning as tp

    return tp.importance.GroupTaylorImportance()


@_importance("random")
def random() -> Any:
    """Uniformly random scores: the control every criterion should beat (Li et al., "Revisiting Random
    Channel Pruning", CVPR 2022, arXiv:2205.05676). Seeded by the recipe's ``seed``.

    Recipe: ``prune: {importance: random}``
    """
    import torch_pruning as tp

    return tp.importance.RandomImportance()


@_importance("lamp")
def lamp() -> Any:
    """Layer-adaptive magnitude scores (Lee et al., LAMP, ICLR 2021, arXiv:2010.07611): L2 scores rescaled so
    they compare across layers; most useful with ``global_pruning: true``.

    Recipe: ``prune: {importance: lamp, global_pruning: true}``
    """
    import torch_pruning as tp

    return tp.importance.LAMPImportance(p=2)


@_importance("fpgm")
def fpgm() -> Any:
    """Filter pruning via geometric median (He et al., FPGM, CVPR 2019, arXiv:1811.00250): removes the most
    replaceable filters (closest to the others) rather than the smallest.

    Recipe: ``prune: {importance: fpgm}``
    """
    import torch_pruning as tp

    return tp.importance.FPGMImportance(p=2)
