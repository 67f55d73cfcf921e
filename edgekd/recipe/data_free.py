"""``distill.data_free``: distil from synthetic batches the teacher generates, reading no training image.

Why a recipe section and not a loss: it changes where the student's batches come from, not what they are
scored by. The recipe's ``distill.losses`` still train the student; the section only says how the batches are
synthesised (its ``method``, a registered synthesiser in ``edgekd/distill/data_free/``) and how much synthesis
the run may spend. Each method's own options sit beside ``method`` (like a loss's parameters beside ``name``)
and are validated against the method's ``Params`` when the recipe is loaded.

Recipe::

    distill:
      epochs: 4
      data_free: {method: two_generators, steps_per_epoch: 100, batch_size: 64, memory_bank: 2048}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DataFreeConfig(BaseModel):
    """Synthesis budget shared by every method; the method's own options are the extra keys."""

    model_config = ConfigDict(extra="allow", frozen=True)

    method: str = Field("two_generators", description="Registered synthesis method (see `edgekd schema`).")
    steps_per_epoch: int = Field(
        100, ge=1, description="Student updates per epoch (distill.epochs epochs): there is no split to pass."
    )
    batch_size: int | None = Field(
        None, ge=2, description="Synthetic samples per student update; default: data.batch_size."
    )
    synthesis_steps: int = Field(
        1,
        ge=1,
        description="Synthesis updates (generator steps, or input-optimisation steps for deepinversion) per "
        "student update.",
    )
    generator_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the generator(s) or inputs.")
    latent_dim: int = Field(64, ge=1, description="Generator noise dimension.")
    memory_bank: int = Field(
        0,
        ge=0,
        description="Past synthetic samples kept (a ring buffer, Fast-DFKD/CMI style); 0 keeps none.",
    )
    replay: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Fraction of each student batch drawn from the memory bank once it holds samples.",
    )
    freeze_student_bn: bool = Field(
        False,
        description="Keep the student's BatchNorm statistics fixed instead of re-estimating them on the "
        "synthetic batches (the papers re-estimate them; a pruned student's statistics are stale anyway, and "
        "frozen ones let unusual synthetic activations blow the student up).",
    )

    @property
    def params(self) -> dict[str, Any]:
        """The method's own options (everything beside the shared keys)."""
        return dict(self.model_extra or {})
