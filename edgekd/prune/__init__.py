"""The structural pruning stage: importance criteria (``IMPORTANCES``), ``prune_model`` and the stage ``run``.

>>> from edgekd.prune import IMPORTANCES
>>> "group_l2" in IMPORTANCES
True
"""

from __future__ import annotations

from edgekd.prune.importance import IMPORTANCES, build_importance, needs_gradients
from edgekd.prune.oneshot import prune_model
from edgekd.prune.progressive import prune_progressively
from edgekd.prune.stage import STAGE, run

__all__ = [
    "IMPORTANCES",
    "STAGE",
    "build_importance",
    "needs_gradients",
    "prune_model",
    "prune_progressively",
    "run",
]
