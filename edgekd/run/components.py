"""Recipe load as the commands see it: the schema (:mod:`edgekd.recipe`), then every named component checked
against its registry before any work starts.

Why here and not in :mod:`edgekd.recipe`: the registries fill as the stage packages are imported, so checking
names needs the stages; the recipe package sits below them and must not import them (the layers run one way:
schemas, stages, orchestration, CLI). torchdistill's lesson: a typo in a loss or module name must fail at load
time, not at the first forward pass.
"""

from __future__ import annotations

import os
from typing import Any

from edgekd import data, distill, models, profile, prune, tasks
from edgekd.errors import InputError
from edgekd.recipe import load
from edgekd.recipe.schema import Recipe
from edgekd.registry import did_you_mean


def load_recipe(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe file, and check every component it names.

    Raises:
        InputError: missing/malformed file, unknown key, wrong type, out-of-range value, unknown component.
    """
    return _checked(load.load_recipe(path, overrides), str(path), overrides)


def recipe_from_dict(
    raw: dict[str, Any], source: str = "recipe", overrides: list[str] | tuple[str, ...] = ()
) -> Recipe:
    """Validate plain data into a :class:`Recipe` and check its components (no path resolution).

    ``overrides`` (already applied to ``raw``) only say who is to blame for a bad value.
    """
    return _checked(load.recipe_from_dict(raw, source, overrides), source, overrides)


def _checked(recipe: Recipe, source: str, overrides: list[str] | tuple[str, ...]) -> Recipe:
    """``recipe`` once its components check out; a bad one a ``--set`` named is blamed on that ``--set``."""
    try:
        check_components(recipe, source)
    except InputError as exc:
        raise load.reattribute(exc, source, overrides) from None
    return recipe


def check_components(recipe: Recipe, source: str = "recipe") -> None:
    """Check every component name (and each component's own options) against its registry.

    Raises:
        InputError: ``<source>: <key path>: unknown <kind> 'x'; did you mean 'y'? (valid: ...)`` and the like.
    """
    for where, name, registry in (
        ("task", recipe.task, tasks.TASKS),
        ("data.name", recipe.data.name, data.DATASETS),
        ("prune.importance", recipe.prune.importance, prune.IMPORTANCES),
    ):
        _check(source, where, name, registry)
    data.parse_dataset_params(recipe.data, where=f"{source}: data.args")
    for i, target in enumerate(recipe.profile.targets):  # registered, a URL or targets.yaml; no connecting
        try:
            profile.get_target(target)
        except InputError as exc:
            raise InputError(f"{source}: profile.targets.{i}: {exc}") from None
    models.check_model_name(recipe.teacher.model.name, where=f"{source}: teacher.model.name")
    for i, extra in enumerate(recipe.distill.extra_teachers):
        models.check_model_name(extra.model.name, where=f"{source}: distill.extra_teachers.{i}.model.name")
    _check_losses(recipe, source)
    _check_data_free(recipe, source)


def _check_losses(recipe: Recipe, source: str) -> None:
    dense_task = tasks.TASKS.get(recipe.task).dense_output
    for path, losses in recipe.distill.loss_lists():
        for i, spec in enumerate(losses):
            _check(source, f"{path}.{i}.name", spec.name, distill.LOSSES)
            if distill.LOSSES.get(spec.name).dense and not dense_task:
                raise InputError(
                    f"{source}: {path}.{i}.name: '{spec.name}' distils dense (per-pixel) predictions; "
                    f"task '{recipe.task}' has none (use it with task: segmentation)"
                )
            distill.validate_loss_params(spec, where=f"{source}: {path}.{i}")


def _check_data_free(recipe: Recipe, source: str) -> None:
    """``distill.data_free``: its method and options, and no other stage reading training images."""
    if recipe.distill.data_free is None:
        return
    distill.check_data_free(recipe, source)
    val = recipe.data.val
    if val and not isinstance(val, str):  # a fraction or count carved from the training split
        raise InputError(
            f"{source}: data.val: {val} would be carved from the training split, which distill.data_free "
            "does not read; set data.val: 0 (the last epoch is kept) or a directory of labelled hold-out images"
        )
    if prune.needs_gradients(recipe.prune.importance):
        raise InputError(
            f"{source}: prune.importance: '{recipe.prune.importance}' calibrates on training batches, and "
            "distill.data_free reads none; use a weight-only criterion such as group_l2"
        )
    if recipe.export.int8 is not None:
        raise InputError(
            f"{source}: export.int8: INT8 calibration reads training images, and distill.data_free reads "
            "none; drop export.int8 (or ship FP16)"
        )


def _check(source: str, where: str, name: str, registry: Any) -> None:
    if name not in registry:
        valid = ", ".join(registry.names())
        raise InputError(
            f"{source}: {where}: unknown {registry.kind} '{name}'{did_you_mean(name, registry.names())}"
            f" (valid: {valid})"
        )
