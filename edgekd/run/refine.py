"""``prune.latency.refine``: prune again when the shipped student missed its latency budget (issue 14, item 4).

The profile stage measures the student on the budget's target; a miss larger than the latency model's error
is recorded in the model (:mod:`edgekd.latency.feedback`). With ``refine: true`` the orchestrator then walks
the stages from ``calibrate`` through ``profile`` once more: the calibrate stage reloads the corrected model,
the prune stage's inputs hash it (so the new student is a new stage result, resumable like any other), and
the report states both attempts under ``stages.refine``. When the corrected model says the budget cannot be
reached at all, the first student is kept and ``stages.refine.kept_first`` says why. One extra round: each
costs a distillation, and a second miss beyond the model's error is better answered by a lower budget than by
more rounds.
"""

from __future__ import annotations

import logging
from typing import Any

from edgekd.context import Upstream
from edgekd.recipe import Recipe
from edgekd.results import BudgetCheck, ProfileResult, to_dict

log = logging.getLogger("edgekd")

FIRST_STAGE = "calibrate"  # where a refinement round starts (the model is reloaded there)
LAST_STAGE = "profile"  # the stage whose budget check decides
REPRUNE_STAGE = "prune"  # a refinement it cannot allocate keeps the first student
MAX_ROUNDS = 1


def missed_budget(recipe: Recipe, upstream: Upstream, rounds: int) -> BudgetCheck | None:
    """The budget check to refine on, or ``None`` (met, not asked for, not measured, or rounds used up)."""
    if recipe.prune.target != "latency" or not recipe.prune.latency.refine or rounds >= MAX_ROUNDS:
        return None
    profiled = upstream.find(ProfileResult)
    check = profiled.budget if profiled is not None else None
    if check is None or check.met or not check.model_updated:
        return None
    log.info(
        "refine: %.3f ms measured against a %.3f ms budget; pruning again against the corrected latency model",
        check.measured_ms,
        check.budget_ms,
    )
    return check


def refine_entry(missed: list[BudgetCheck], kept_first: str | None = None) -> dict[str, Any]:
    """``stages.refine``: ``{seconds, rounds, missed: [budget check of each earlier attempt], kept_first}``.

    ``kept_first``: why the refinement's prune could not allocate (the first student shipped), else ``None``.
    """
    return {
        "seconds": 0.0,
        "rounds": len(missed),
        "missed": [to_dict(check) for check in missed],
        "kept_first": kept_first,
    }
