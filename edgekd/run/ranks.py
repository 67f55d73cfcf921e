"""``compress`` on several ranks: rank 0 runs the pipeline, the other ranks only help it distil.

Why this split: pruning, export, profiling and the report are cheap next to distillation, or are measurements
that must not run twice on one machine, so rank 0 does them alone and is the only rank that writes to the run
directory. Every rank prepares the same context from the recipe (:func:`edgekd.run.prepare`: data and the
frozen, replicated teachers), then waits for rank 0 to send the pruned student: the bytes of
``state/pruned.pt``, so other nodes need no shared file system. All ranks then distil in lockstep (DDP, see
:func:`edgekd.engine.trainer.fit`), rank 0 saves the result and carries on, and the other ranks leave.

The protocol is one broadcast from rank 0 at its data-parallel stage: the pruned student's bytes, or ``None``
when a resumed run reuses a finished distillation and there is nothing to train.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgekd.engine import distributed
from edgekd.recipe import Recipe
from edgekd.rundir import RunDir

log = logging.getLogger("edgekd")

_shared: list[bool] = []  # whether rank 0 has sent this run's distill job (one entry per running compress)


@contextlib.contextmanager
def serving() -> Iterator[None]:
    """Rank 0 inside a torchrun job: ``compress`` runs the pipeline and shares its distill job once."""
    _shared.append(
        False
    )  # if rank 0 fails before its distill stage, torchrun's agent stops the waiting ranks
    try:
        yield
    finally:
        _shared.pop()


def serving_ranks() -> bool:
    """Whether this process is rank 0 inside :func:`serving` (so ``compress`` runs the pipeline)."""
    return bool(_shared)


def share_distill_job(pruned_pt: Path | None) -> None:
    """Rank 0: send the pruned student (or ``None``: nothing to train) to the other ranks, once per run."""
    if not distributed.is_distributed() or not _shared or _shared[-1]:
        return
    _shared[-1] = True
    distributed.broadcast_object(pruned_pt.read_bytes() if pruned_pt is not None else None)


def follow(recipe: Recipe, out: Path) -> None:
    """A rank other than 0: prepare the run's context, receive the pruned student, distil it with rank 0."""
    from edgekd.distill import train_student
    from edgekd.engine.run_student import load_run_student
    from edgekd.run.prepare import prepare

    ctx = prepare(recipe, RunDir(out))  # writes nothing: rank 0 owns the run directory
    pruned = distributed.broadcast_object(None)
    if pruned is None:
        log.debug("rank %d: nothing to distil", distributed.rank())
        return
    with tempfile.TemporaryDirectory(prefix="edgekd-rank-") as tmp:
        path = Path(tmp) / "pruned.pt"
        path.write_bytes(pruned)
        student = load_run_student(path, recipe)
    train_student(ctx, student)
