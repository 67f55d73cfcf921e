"""What ``compress`` and the single-stage commands share: stage timing, the run log, and the run's student file.

Kept out of :mod:`edgekd.pipeline` so that module reads as the sequence of stages, and so ``edgekd prune`` /
``distill`` / ``export`` (:mod:`edgekd.stages`) and the other ranks of a distributed run (:mod:`edgekd.ranks`)
write and read ``student.pt`` exactly as ``compress`` does.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from edgekd import __version__
from edgekd.data import DataBundle
from edgekd.engine.evaluate import evaluate_model
from edgekd.errors import InputError
from edgekd.models.complexity import count_complexity
from edgekd.recipe import Recipe
from edgekd.results import Artifact, ModelSummary, PruneResult, TrainResult, to_dict
from edgekd.tasks import Task

log = logging.getLogger("edgekd")


@dataclass
class StageClock:
    """Wall-clock seconds per stage, for ``report.json["stages"]`` (and the slowest-stage line)."""

    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        info: dict[str, Any] = {}
        log.info("── %s", name)
        start = time.perf_counter()
        try:
            yield info
        finally:
            self.stages[name] = {"seconds": round(time.perf_counter() - start, 3), **info}


@contextlib.contextmanager
def run_log(path: Path, append: bool = True) -> Iterator[None]:
    """Mirror the ``edgekd`` logger (all levels) into ``RUN/edgekd.log`` for the run's duration.

    The log is the one file not written atomically: it is meant to be read while the run is going, and a
    killed run's log is most useful exactly as far as it got. A resumed run appends to it.
    """
    handler = logging.FileHandler(path, mode="a" if append else "w", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("edgekd")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def summarize(
    model: nn.Module, data: DataBundle, task: Task, batch_size: int, what: str = "teacher.model"
) -> ModelSummary:
    """Params, MACs (batch 1, the one counter) and PyTorch eval metrics of a model.

    Raises:
        InputError: the MACs counter (a ``torch.jit`` trace) cannot trace the model; names what it tripped on.
    """
    try:
        cost = count_complexity(model, data.example_input(1))
    except Exception as exc:  # the tracer raises RuntimeError/TypeError/… on whatever it cannot follow
        detail = " ".join(str(exc).split())[:240] or type(exc).__name__
        raise InputError(
            f"{what}: the MACs counter cannot trace the model ({type(exc).__name__}: {detail}); make forward "
            "traceable: tensor outputs, no Python control flow on tensor values"
        ) from exc
    metrics = evaluate_model(model, data.eval_loader(batch_size), task)
    return ModelSummary(params=cost.params, macs=cost.macs, metrics=metrics)


def student_meta(recipe: Recipe, prune: PruneResult | None, distill: TrainResult | None) -> dict[str, Any]:
    """What ``student.pt`` carries besides weights: enough for ``edgekd export student.pt`` to run alone."""
    return {
        "edgekd_version": __version__,
        "recipe": recipe.to_yaml_dict(),
        "prune": to_dict(prune) if prune else None,
        "metrics": distill.metrics if distill else None,
    }


def save_run_student(
    path: Path,
    student: nn.Module,
    recipe: Recipe,
    data: DataBundle,
    prune: PruneResult | None,
    distill: TrainResult | None,
) -> None:
    """Write ``student.pt`` with the metadata that lets ``edgekd export student.pt`` run on its own."""
    from edgekd.models.student_file import save_student

    meta = student_meta(recipe, prune, distill)
    save_student(path, student, recipe.teacher.model, data.num_classes, data.in_channels, meta)


def pt_artifact(path: Path, metrics: dict[str, float]) -> Artifact:
    return Artifact.of_file(path, name="student.pt", metrics=metrics)


def check_teacher(teacher: nn.Module, data: DataBundle, task: Task) -> None:
    """Fail fast, as bad input naming the layer, when the teacher cannot take the dataset's images.

    Without this, a wrong ``in_channels`` or an output the task cannot read surfaces as a bare shape or type
    error deep inside evaluation.
    """
    from edgekd.prune.layers import forward_or_explain

    out = forward_or_explain(
        teacher.eval(),
        data.example_input(2),
        "teacher.model",
        "check teacher.model (in_channels, num_classes, args) against the dataset",
    )
    try:
        task.output_tensor(out)
    except TypeError as exc:
        raise InputError(
            f"teacher.model: {exc}; return a tensor, a tuple starting with one, or a dict with key 'out'"
        ) from None


def load_run_student(path: Path, recipe: Recipe) -> nn.Module:
    """Load a student edgekd wrote for ``recipe``; a ``module:factory`` spec is trusted only if the recipe names it.

    A factory spec imports and runs code. The recipe naming the same spec is the user's opt-in (the teacher
    was built from it already); a file naming any other factory is refused by ``load_student``.
    """
    from edgekd.models.student_file import load_student, read_student_meta

    stored = read_student_meta(path).get("recipe", {}).get("teacher", {}).get("model")
    return load_student(path, trust=stored == recipe.teacher.model.model_dump(mode="json"))
