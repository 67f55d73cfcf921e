"""Load a recipe: YAML (safe) → ``--set`` overrides → schema validation → registry name checks.

Every failure is an :class:`~edgekd.errors.InputError` with one line naming the file, the key path, the bad
value and the fix; e.g. ``recipe.yaml: prune.importnce: unknown key; did you mean 'importance'?``.
Recipes are data: they are parsed with ``yaml.safe_load`` and never import or call code by themselves.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from edgekd.errors import InputError
from edgekd.recipe.schema import LossSpec, Recipe
from edgekd.registry import did_you_mean

# Path-valued keys that are resolved relative to the recipe file's directory.
_PATH_KEYS = (("data", "root"), ("teacher", "checkpoint"))


def load_recipe(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe file.

    Args:
        path: the YAML recipe.
        overrides: ``section.key=value`` strings (values parsed as YAML), applied in order.

    Raises:
        InputError: missing/malformed file, unknown key, wrong type, out-of-range value, unknown component.
    """
    recipe_path = Path(path)
    try:
        text = recipe_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{recipe_path}: recipe not found") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise InputError(f"{recipe_path}: cannot read recipe ({exc.__class__.__name__})") from None
    data = parse_yaml(text, source=str(recipe_path))
    _resolve_paths(data, recipe_path.resolve().parent)
    return recipe_from_dict(apply_overrides(data, overrides), source=str(recipe_path))


def parse_yaml(text: str, source: str = "recipe") -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{source}: malformed YAML{where}: {problem}") from None
    if data is None:
        raise InputError(f"{source}: recipe is empty; it needs at least a 'teacher' section")
    if not isinstance(data, dict):
        raise InputError(f"{source}: a recipe is a mapping of sections, got {type(data).__name__}")
    return data


def recipe_from_dict(data: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate plain data into a :class:`Recipe` (no path resolution, no overrides)."""
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{source}: {format_validation_error(exc, Recipe)}") from None
    check_registered_names(recipe, source)
    return recipe


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` applied; list items are addressed by index."""
    result = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {item!r}: expected section.key=value")
        parts = key.strip().split(".")
        if any(not p for p in parts):
            raise InputError(f"--set {item!r}: empty key segment in '{key}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node: Any = result
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise InputError(f"--set {item!r}: '{part}' is not an index of {'.'.join(parts[:depth])}")
                index = int(part)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    child = node.get(part)
                    if not isinstance(child, dict | list):
                        child = node[part] = {}
                    node = child
            else:
                raise InputError(f"--set {item!r}: {'.'.join(parts[:depth])} is not a section")
    return result


def format_validation_error(exc: ValidationError, root: type[BaseModel]) -> str:
    """Turn pydantic's report into one line: the first problem, its key path and a suggestion."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = [str(p) for p in first["loc"]]
    path = ".".join(_show_key(p) for p in loc) or "<root>"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    kind = first["type"]
    if kind == "extra_forbidden":
        valid = _valid_keys(root, loc[:-1])
        hint = did_you_mean(loc[-1], valid) if valid and loc[-1].isprintable() else ""
        listing = f" (valid: {', '.join(valid)})" if valid and not hint else ""
        return f"{path}: unknown key{hint}{listing}{more}"
    if kind == "missing":
        return f"{path}: required key is missing{more}"
    got = first.get("input")
    shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
    msg = first["msg"].removeprefix("Value error, ")
    return f"{path}: {msg} (got {shown}){more}"


def _show_key(key: str) -> str:
    """A key as typed in YAML; quoted when it holds anything but printable characters (newlines, tabs)."""
    return key if key.isprintable() and key.strip() == key and key else repr(key)


def _valid_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the (sub)model at ``loc``; empty when the location is not a model."""
    current: Any = model
    for part in loc:
        if part.isdigit():
            continue  # list index: the item model is the same
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _model_of(field.annotation)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    blocks = [(data.get(section), key) for section, key in _PATH_KEYS]
    distill = data.get("distill")
    if isinstance(distill, dict) and isinstance(distill.get("extra_teachers"), list):
        blocks += [(teacher, "checkpoint") for teacher in distill["extra_teachers"]]
    for block, key in blocks:
        if isinstance(block, dict) and isinstance(block.get(key), str):
            value = Path(os.path.expanduser(block[key]))
            block[key] = str(value if value.is_absolute() else (base / value))


def check_registered_names(recipe: Recipe, source: str = "recipe") -> None:
    """Check every component name against its registry before any work starts.

    torchdistill's lesson: a typo in a loss or module name must fail at load time, not at the first forward.
    """
    from edgekd import data, distill, models, profile, prune, tasks  # registries fill on import

    checks: list[tuple[str, str, Any]] = [
        ("task", recipe.task, tasks.TASKS),
        ("data.name", recipe.data.name, data.DATASETS),
        ("prune.importance", recipe.prune.importance, prune.IMPORTANCES),
    ]
    for where, name, registry in checks:
        _check(source, where, name, registry)
    for i, target in enumerate(
        recipe.profile.targets
    ):  # registered, ssh:// URL or targets.yaml; no connecting
        try:
            profile.get_target(target)
        except InputError as exc:
            raise InputError(f"{source}: profile.targets.{i}: {exc}") from None
    models.check_model_name(recipe.teacher.model.name, where=f"{source}: teacher.model.name")
    for i, extra in enumerate(recipe.distill.extra_teachers):
        models.check_model_name(extra.model.name, where=f"{source}: distill.extra_teachers.{i}.model.name")
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


def _check(source: str, where: str, name: str, registry: Any) -> None:
    if name not in registry:
        valid = ", ".join(registry.names())
        raise InputError(
            f"{source}: {where}: unknown {registry.kind} '{name}'{did_you_mean(name, registry.names())}"
            f" (valid: {valid})"
        )


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML, as written to ``RUN/recipe.yaml``."""
    return yaml.safe_dump(recipe.to_yaml_dict(), sort_keys=False)


__all__ = [
    "LossSpec",
    "Recipe",
    "apply_overrides",
    "dump_recipe",
    "load_recipe",
    "parse_yaml",
    "recipe_from_dict",
]
