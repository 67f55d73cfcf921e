"""``prepare``: the one set-up every run starts from — ``compress``, the single-stage commands and the other
ranks of a distributed run all build their :class:`~edgekd.context.RunContext` here, so they see the same data,
task and teachers."""

from __future__ import annotations

from edgekd.context import RunContext
from edgekd.data import build_data, resolved_config
from edgekd.engine.device import distill_device
from edgekd.engine.trainer import seed_everything
from edgekd.recipe.schema import Recipe
from edgekd.rundir import RunDir
from edgekd.tasks import get_task
from edgekd.teacher import build_extra_teachers, build_teacher, check_teacher


def prepare(recipe: Recipe, run: RunDir, teachers: bool = True) -> RunContext:
    """Seed, build the data, the task and (with ``teachers``) the frozen teachers of ``recipe``.

    Every teacher checkpoint is loaded here, so a bad one fails before any pruning; the original teacher is
    checked against the dataset (input channels, an output the task can read). ``teachers=False`` is for
    commands that never run one (``edgekd export student.pt``); nothing is written to ``run``.

    Raises:
        InputError: missing or malformed data, a bad checkpoint, a teacher that cannot take the data, or a
            training device (``device``, ``distill.precision``) this machine does not have.
    """
    if teachers:  # the commands that may train: a missing GPU fails before the data and teachers load
        distill_device(recipe)
    seed_everything(recipe.seed)
    data = build_data(recipe.data, recipe.seed, teacher=recipe.teacher.model.name)
    # the resolved recipe (report, student.pt) records the normalisation used and where it came from
    recipe = recipe.model_copy(update={"data": resolved_config(recipe.data, data)})
    task = get_task(recipe.task, data)  # specialised to the targets (e.g. gaze angles)
    models: tuple = ()
    if teachers:
        original = build_teacher(recipe, data)
        models = (original, *build_extra_teachers(recipe, data))
        check_teacher(original, data, task)
    return RunContext(recipe=recipe, run=run, data=data, task=task, teachers=models)
