"""The structural pruning stage: importance criteria (``IMPORTANCES``) and ``run`` (:mod:`.stage`).

>>> from edgekd.prune import IMPORTANCES
>>> "group_l2" in IMPORTANCES
True
"""

from __future__ import annotations

from edgekd.prune.importance import IMPORTANCES, build_importance, needs_gradients
from edgekd.prune.stage import run

__all__ = ["IMPORTANCES", "build_importance", "needs_gradients", "run"]
