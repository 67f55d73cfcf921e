"""The base of every recipe section, and the optimisation settings that training sections share.

Separate from :mod:`edgekd.recipe.schema` so that sections defined in modules of their own (``prune``, ``gates``,
``distill.data_free``) can build on them without importing the whole schema.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, models are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class OptimConfig(Section):
    """Optimisation settings shared by teacher training and distillation."""

    epochs: int = Field(5, ge=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "constant", "onecycle"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
