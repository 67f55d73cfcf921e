"""Pydantic failures as one line: the key path, the bad value and a "did you mean" for typos.

Why its own module at the bottom layer: the recipe loader, every component's typed ``Params`` (losses,
datasets) and ``targets.yaml`` entries all turn a :class:`pydantic.ValidationError` into the same one-line
:class:`~edgekd.errors.InputError`; keeping the formatter here lets them share it without importing the
recipe loader (which would tie the stages to it in an import loop).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from edgekd.errors import InputError
from edgekd.registry import did_you_mean

M = TypeVar("M", bound=BaseModel)


def validate_params(model: type[M], data: Any, where: str) -> M:
    """``model.model_validate(data)``, or an InputError prefixed with ``where`` (e.g. ``recipe.yaml: data.args``).

    Unknown keys are answered before pydantic runs, with the closest valid key: pydantic's first error for a
    typo'd required key would otherwise be "missing", which hides the typo.
    """
    if isinstance(data, dict):
        valid = sorted(model.model_fields)
        for key in data:
            if model.model_config.get("extra") == "forbid" and str(key) not in valid:
                hint = did_you_mean(str(key), valid) or f" (valid: {', '.join(valid) or 'none'})"
                raise InputError(f"{where}.{key}: unknown key{hint}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{where}.{format_validation_error(exc, model)}") from None


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
