"""Load a recipe: YAML (safe) → ``--set`` overrides → schema validation.

Component names (datasets, models, losses, targets…) are checked against their registries one layer up, by
:func:`edgekd.run.load_recipe`, which the commands use: the registries fill as the stages are imported, and
this package sits below the stages.

Every failure is an :class:`~edgekd.errors.InputError` with one line naming where the bad value came from (the
file, or the ``--set`` that wrote it), the key path, the bad value and the fix; e.g.
``recipe.yaml: prune.importnce: unknown key; did you mean 'importance'?`` or
``--set distill.epochs=many: distill.epochs: Input should be a valid integer ...``.
Recipes are data: they are parsed with ``yaml.safe_load`` and never import or call code by themselves.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined

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
    return recipe_from_dict(apply_overrides(data, overrides), str(recipe_path), overrides)


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


def recipe_from_dict(
    data: dict[str, Any], source: str = "recipe", overrides: list[str] | tuple[str, ...] = ()
) -> Recipe:
    """Validate plain data into a :class:`Recipe` (no path resolution; ``overrides`` were already applied).

    ``overrides`` only say who is to blame: an error in a value a ``--set`` wrote names that ``--set``, not
    ``source`` (:func:`blame`).
    """
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        message = format_validation_error(exc, Recipe)
        key = [str(part) for part in exc.errors(include_url=False)[0]["loc"]]
        raise InputError(f"{blame(key, message, source, overrides)}: {message}") from None
    return recipe


def blame(key: list[str], message: str, source: str, overrides: list[str] | tuple[str, ...]) -> str:
    """Where the bad value at ``key`` came from: the rightmost ``--set`` that wrote it, else ``source``.

    An override is to blame for the key it sets and everything inside it (``--set distill={epochs: x}`` for
    ``distill.epochs``), and for a key it wrote into (``--set distill.losses.kd.weight=1`` breaks
    ``distill.losses``). A check of the whole recipe (``key`` empty) blames the override whose key its
    ``message`` names. Telling the user to fix a file that holds no such value sends them looking for it.
    """
    for item in reversed(overrides):
        parts = item.partition("=")[0].strip().split(".")
        shared = min(len(parts), len(key))
        if (key and parts[:shared] == key[:shared]) or (not key and ".".join(parts) in message):
            return _as_typed(item)
    return source


def reattribute(error: InputError, source: str, overrides: list[str] | tuple[str, ...]) -> InputError:
    """``error`` (``<source>: <key path>: ...``, as the registry checks word it) blamed on the ``--set`` that
    wrote that key, if one did; ``error`` itself otherwise."""
    text = str(error)
    if not overrides or not text.startswith(f"{source}: "):
        return error
    rest = text[len(source) + 2 :]
    who = blame(rest.split(":", 1)[0].strip().split("."), rest, source, overrides)
    return error if who == source else InputError(f"{who}: {rest}")


def _as_typed(item: str) -> str:
    """``--set a.b=1`` as the user typed it; quoted when it holds a newline or tab (errors are one line)."""
    return f"--set {item}" if item.isprintable() else f"--set {item!r}"


class _BadPath(Exception):
    """An override's key does not fit the recipe's shape (the caller prefixes the ``--set`` it came from)."""


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` applied; list items are addressed by index.

    A list the recipe leaves out is filled in with the schema's default first, so that
    ``--set distill.losses.1.temperature=2`` tunes the default ``kd`` term of a recipe that lists no losses
    (instead of turning ``distill.losses`` into a mapping that fails validation).
    """
    result = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{_as_typed(item)}: expected section.key=value")
        parts = key.strip().split(".")
        if any(not p for p in parts):
            raise InputError(f"{_as_typed(item)}: empty key segment in {key!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        try:
            _set_path(result, parts, value)
        except _BadPath as exc:  # one line: the message repeats keys, which may hold newlines
            raise InputError(f"{_as_typed(item)}: {' '.join(str(exc).split())}") from None
    return result


def _set_path(root: dict[str, Any], parts: list[str], value: Any) -> None:
    node: Any = root
    defaults = False  # whether ``node`` was filled in from the schema's defaults (for the error message)
    for depth, part in enumerate(parts):
        where, last = ".".join(parts[:depth]), depth == len(parts) - 1
        if isinstance(node, list):
            index = _list_index(node, part, where, defaults)
            if last:
                node[index] = value
            node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            elif part not in node:
                node[part], filled = _default_child(parts[: depth + 1], parts[depth + 1])
                defaults = defaults or filled
            elif not isinstance(node[part], dict | list):
                node[part] = {}
            node = node[part]
        else:
            raise _BadPath(f"{where} is not a section")


def _list_index(items: list[Any], part: str, where: str, defaults: bool) -> int:
    entries = _describe(items)
    origin = f"the defaults: {entries}" if defaults else entries
    if not part.isdigit():
        raise _BadPath(f"{where} is a list ({origin}); '{part}' is not an index of it")
    if int(part) >= len(items):
        raise _BadPath(
            f"{where} has {len(items)} entries ({origin}); index {part} does not exist (to add one, set the "
            f"whole list: --set '{where}=[...]')"
        )
    return int(part)


def _default_child(path: list[str], next_part: str) -> tuple[Any, bool]:
    """A missing key on an override's path: the schema's default when it is a list (``True``), else ``{}``."""
    default = _schema_default(path)
    if isinstance(default, list):
        return default, True
    if next_part.isdigit():
        raise _BadPath(
            f"{'.'.join(path)} is not set and has no default entries; index {next_part} does not exist (set "
            f"the whole list: --set '{'.'.join(path)}=[...]')"
        )
    return {}, False


def _schema_default(path: list[str]) -> Any:
    """What a recipe that leaves ``path`` out gets there, as plain data; ``None`` when the schema has nothing."""
    model: Any = Recipe
    field = None
    for part in path:
        if part.isdigit():  # an item of a list field: ``model`` is already the item's model
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        field = fields[part]
        model = _model_in(field.annotation)
    if field is None or path[-1].isdigit():
        return None
    default = field.get_default(call_default_factory=True)
    if default is PydanticUndefined:  # a required key
        return None
    return TypeAdapter(field.annotation).dump_python(default, mode="json")


def _model_in(annotation: Any) -> Any:
    """The pydantic model an annotation holds (``list[LossSpec]`` → ``LossSpec``), else ``None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _describe(items: list[Any], shown: int = 6) -> str:
    """``ce, kd`` for loss-like entries (their names), the values themselves otherwise."""
    names = [str(i["name"]) if isinstance(i, dict) and "name" in i else repr(i)[:40] for i in items]
    more = f", … (+{len(names) - shown})" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more if names else "none"


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
    "reattribute",
    "recipe_from_dict",
]
