"""Load a recipe: YAML (safe) → ``--set`` overrides → schema validation.

Component names (datasets, models, losses, targets…) are checked against their registries one layer up, by
:func:`edgekd.run.load_recipe`, which the commands use: the registries fill as the stages are imported, and
this package sits below the stages.

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
from pydantic import ValidationError

from edgekd.errors import InputError
from edgekd.recipe.schema import LossSpec, Recipe
from edgekd.recipe.validation import format_validation_error

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


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    blocks = [(data.get(section), key) for section, key in _PATH_KEYS]
    distill = data.get("distill")
    if isinstance(distill, dict) and isinstance(distill.get("extra_teachers"), list):
        blocks += [(teacher, "checkpoint") for teacher in distill["extra_teachers"]]
    for block, key in blocks:
        if isinstance(block, dict) and isinstance(block.get(key), str):
            value = Path(os.path.expanduser(block[key]))
            block[key] = str(value if value.is_absolute() else (base / value))


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
