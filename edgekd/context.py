"""The stage contract: one frozen :class:`RunContext` per run, and every stage as ``run(ctx, upstream) -> Result``.

Why one contract: ``compress``, the single-stage commands (``edgekd prune | distill | export``) and the other
ranks of a distributed run all start from the same context, built once by :func:`edgekd.run.prepare`; a stage
reads what it needs from it (its recipe section, the data, the task, the teachers, the run directory) and
from the results of the stages before it, and returns a frozen result dataclass that serialises to the report
and to its resume marker (``edgekd.results.to_dict`` / ``from_dict``). No stage mutates its input.

A stage is declared once, in its own package, as a :class:`Stage`; the pipeline
(:data:`edgekd.run.pipeline.PIPELINE`) is the list of them, so adding a stage (sparse training, latency
calibration, data-free synthesis) is one module and one line there.

This module sits below the stages: it imports only the recipe schema and the run directory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edgekd.errors import EdgekdError
from edgekd.recipe.schema import PERMISSIONS, Recipe
from edgekd.rundir import RunDir

if TYPE_CHECKING:
    from torch import nn

    from edgekd.data.base import DataBundle
    from edgekd.tasks.base import Task

R = TypeVar("R")


@dataclass(frozen=True)
class RunContext:
    """What every stage of one run reads: built once by :func:`edgekd.run.prepare`, never mutated.

    Attributes:
        recipe: the resolved recipe.
        run: the run directory (stages write their outputs through it).
        data: the dataset, built from ``recipe.data``.
        task: the task, specialised to the data's targets (e.g. gaze angles).
        teachers: the frozen teachers: the unpruned original first, then ``distill.extra_teachers``.
        resume_training: a training stage may continue from its epoch checkpoint (``run.checkpoint(stage)``):
            set per stage by the orchestrator when resuming and the checkpoint was started with the same
            inputs.
    """

    recipe: Recipe
    run: RunDir
    data: DataBundle
    task: Task
    teachers: tuple[nn.Module, ...]
    resume_training: bool = False

    @property
    def teacher(self) -> nn.Module:
        """The unpruned original teacher (what is pruned, exported and profiled side by side)."""
        return self.teachers[0]

    @property
    def seed(self) -> int:
        return self.recipe.seed


@dataclass(frozen=True)
class Upstream:
    """What the stages before this one left: their results, looked up by type, and their timings.

    Why by type rather than by stage name: a stage depends on *what* it consumes (a :class:`PruneResult`,
    exported artifacts), not on which stage produced it, so a new stage can sit in between without touching
    its neighbours.

    Attributes:
        results: ``{stage name: result}`` in the order the stages ran.
        stages: ``{stage name: {"seconds": ..., ...}}``: what ``report.json["stages"]`` records.
    """

    results: Mapping[str, Any] = field(default_factory=dict)
    stages: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    def get(self, kind: type[R]) -> R:
        """The latest result of type ``kind``; raises when no earlier stage produced one."""
        found = self.find(kind)
        if found is None:
            have = ", ".join(self.results) or "none"
            raise EdgekdError(f"no earlier stage produced a {kind.__name__} (ran: {have})")
        return found

    def find(self, kind: type[R]) -> R | None:
        """The latest result of type ``kind``, or ``None``."""
        for result in reversed(list(self.results.values())):
            if isinstance(result, kind):
                return result
        return None

    def plus(self, name: str, result: Any, entry: dict[str, Any]) -> Upstream:
        """A new Upstream with stage ``name``'s ``result`` and its ``report.json["stages"]`` ``entry``."""
        return Upstream({**self.results, name: result}, {**self.stages, name: entry})


def _no_outputs(ctx: RunContext, result: Any) -> list[Path]:
    return []


def _no_info(ctx: RunContext, result: Any) -> dict[str, Any]:
    return {}


def _always(recipe: Recipe) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One pipeline stage, as the orchestrator sees it.

    Attributes:
        name: the stage's key in ``report.json["stages"]`` and its resume marker's name.
        result: the frozen dataclass ``run`` returns (rebuilt from the marker on resume).
        run: ``(ctx, upstream) -> result``.
        inputs: ``(ctx, upstream) -> JSON-ready dict``: everything the result depends on besides the
            previous stage (recipe sections, sha256 of files read); hashed into the resume marker.
        outputs: ``(ctx, result) -> files written``; hashed into the marker so a changed file reruns it.
        info: ``(ctx, result) -> dict`` shown beside ``seconds`` in ``report.json["stages"]`` when it ran.
        data_parallel: the stage trains on every rank of a distributed run (see :mod:`edgekd.run.ranks`).
        trains: the stage keeps an epoch checkpoint it can resume from (``ctx.resume_training``).
        resumable: a finished run's marker may stand in for running it again (the report stage always reruns:
            it is cheap and its output names the run's own timings).
        applies: ``recipe -> bool``: whether the recipe asks for this stage at all (an optional stage such as
            sparse training); a stage that does not apply is skipped: no result, no marker, no report entry.
    """

    name: str
    result: type
    run: Callable[[RunContext, Upstream], Any]
    inputs: Callable[[RunContext, Upstream], dict[str, Any]]
    outputs: Callable[[RunContext, Any], list[Path]] = _no_outputs
    info: Callable[[RunContext, Any], dict[str, Any]] = _no_info
    data_parallel: bool = False
    trains: bool = False
    resumable: bool = True
    applies: Callable[[Recipe], bool] = _always


def section(recipe: Recipe, name: str) -> dict[str, Any]:
    """Recipe section ``name`` as JSON-ready data (paths as strings) without its permission keys, for a
    stage's ``inputs``: a permission (``teacher.trust_checkpoint``) changes what may run, not the result."""
    drop = {key.split(".", 1)[1] for key in PERMISSIONS if key.startswith(f"{name}.")}
    return getattr(recipe, name).model_dump(mode="json", exclude=drop)
