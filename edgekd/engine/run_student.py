"""The student file of a run: ``student.pt`` (and ``state/pruned.pt``) with the metadata edgekd needs later.

Why apart from :mod:`edgekd.models.student_file`: that module is the safe file format (structure + weights, no
pickled code); this one decides what a *run* stores in it (the resolved recipe, the prune record, the
distilled metrics), so ``edgekd export student.pt`` can run on its own, and when a run may trust a factory spec.
Every writer and reader of a run's student — the prune and distill stages, the single-stage commands and the
other ranks of a distributed run — goes through these two functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from edgekd import __version__
from edgekd.context import RunContext
from edgekd.models.student_file import load_student, read_student_meta, save_student
from edgekd.recipe.schema import Recipe
from edgekd.results import PruneResult, TrainResult, to_dict


def save_run_student(
    path: Path, student: nn.Module, ctx: RunContext, prune: PruneResult | None, train: TrainResult | None
) -> None:
    """Write ``student`` to ``path`` with the metadata that lets ``edgekd export student.pt`` run on its own."""
    meta: dict[str, Any] = {
        "edgekd_version": __version__,
        "recipe": ctx.recipe.to_yaml_dict(),
        "prune": to_dict(prune) if prune else None,
        "metrics": train.metrics if train else None,  # validation split: what selected the kept epoch
    }
    save_student(path, student, ctx.recipe.teacher.model, ctx.data.num_classes, ctx.data.in_channels, meta)


def load_run_student(path: Path, recipe: Recipe) -> nn.Module:
    """Load a student edgekd wrote for ``recipe``; a ``module:factory`` spec is trusted only if the recipe names it.

    A factory spec imports and runs code. The recipe naming the same spec is the user's opt-in (the teacher
    was built from it already); a file naming any other factory is refused by ``load_student``.
    """
    stored = read_student_meta(path).get("recipe", {}).get("teacher", {}).get("model")
    return load_student(path, trust=stored == recipe.teacher.model.model_dump(mode="json"))


def stored_prune_result(path: Path) -> PruneResult | None:
    """The prune record a student file carries (``None`` for a student that was never pruned by edgekd)."""
    from edgekd.results import from_dict

    record = read_student_meta(path).get("prune")
    return from_dict(PruneResult, record) if record else None
