"""Validate a loss's own recipe parameters against its ``Params`` model (at recipe load time)."""

from __future__ import annotations

from pydantic import ValidationError

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses.base import LossParams
from edgekd.errors import InputError
from edgekd.recipe.schema import LossSpec
from edgekd.recipe.validation import format_validation_error


def parse_loss_params(spec: LossSpec, where: str | None = None) -> LossParams:
    """The typed parameters of ``spec``; unknown keys and bad values raise InputError with the key path."""

    params_model = LOSSES.get(spec.name).Params
    try:
        return params_model.model_validate(spec.params)
    except ValidationError as exc:
        prefix = f"{where}." if where else f"loss '{spec.name}': "
        raise InputError(f"{prefix}{format_validation_error(exc, params_model)}") from None


def validate_loss_params(spec: LossSpec, where: str) -> None:
    parse_loss_params(spec, where)
