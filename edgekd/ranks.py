"""``compress`` on several ranks: rank 0 runs the pipeline, the other ranks only help it distil.

Why this split: pruning, export, profiling and the report are cheap next to distillation, or are measurements
that must not run twice on one machine, so rank 0 does them alone and is the only rank that writes to the run
directory. Every rank builds the data and the (frozen, replicated) teacher from the recipe itself, then waits
for rank 0 to send the pruned student: the bytes of ``state/pruned.pt``, so other nodes need no shared file
system. All ranks then distil in lockstep (DDP, see :func:`edgekd.engine.trainer.fit`), rank 0 saves the
result and carries on, and the other ranks leave.

The protocol is one broadcast from rank 0 at its distill stage: the pruned student's bytes, or ``None`` when
a resumed run reuses a finished distillation and there is nothing to train.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from edgekd.engine import distributed
from edgekd.recipe import Recipe

log = logging.getLogger("edgekd")

_shared: list[bool] = []  # whether rank 0 has sent this run's distill job (one entry per running compress)


def compress_on_ranks(recipe: Recipe, out: Path, resume: bool, force: bool) -> dict[str, Any] | None:
    """Run ``compress`` as one rank of a torchrun job: rank 0 returns the report, the other ranks ``None``."""
    from edgekd.pipeline import compress

    with distributed.session():
        if not distributed.is_main():
            follow(recipe)
            return None
        # if rank 0 fails before its distill stage, the launcher's agent stops the ranks waiting for it
        _shared.append(False)
        try:
            return compress(recipe, out, resume=resume, force=force)
        finally:
            _shared.pop()


def serving_ranks() -> bool:
    """Whether this process is rank 0 inside :func:`compress_on_ranks` (so ``compress`` runs the pipeline)."""
    return bool(_shared)


def share_distill_job(pruned_pt: Path | None) -> None:
    """Rank 0: send the pruned student (or ``None``: nothing to train) to the other ranks, once per run."""
    if not distributed.is_distributed() or not _shared or _shared[-1]:
        return
    _shared[-1] = True
    distributed.broadcast_object(pruned_pt.read_bytes() if pruned_pt is not None else None)


def follow(recipe: Recipe) -> None:
    """A rank other than 0: build data and teacher, receive the pruned student, distil it with rank 0."""
    from edgekd import distill
    from edgekd.data import build_data
    from edgekd.engine.teacher import build_extra_teachers, build_teacher
    from edgekd.engine.trainer import seed_everything
    from edgekd.run_support import load_run_student
    from edgekd.tasks import get_task

    seed_everything(recipe.seed)
    data = build_data(recipe.data)
    teacher = build_teacher(recipe, data)
    pruned = distributed.broadcast_object(None)
    if pruned is None:
        log.debug("rank %d: nothing to distil", distributed.rank())
        return
    with tempfile.TemporaryDirectory(prefix="edgekd-rank-") as tmp:
        path = Path(tmp) / "pruned.pt"
        path.write_bytes(pruned)
        student = load_run_student(path, recipe)
    distill.run(
        student,
        [teacher, *build_extra_teachers(recipe, data)],
        data,
        get_task(recipe.task, data),
        recipe.distill,
        recipe.data,
        recipe.seed,
    )
