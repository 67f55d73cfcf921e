"""Epoch windows shared by every teacher-based loss: a term may start late and/or stop early.

Why a window on each term instead of recipe stages: the FitNets schedule (Romero et al., 2015), which the gaze
thesis 001 used, is "hints first, then the logits". With ``until_epoch`` on the hint term and ``from_epoch`` on
the logit term, one recipe expresses it, and the two halves share one optimizer and LR schedule::

    distill:
      epochs: 6
      losses:
        - {name: ce, weight: 0.1}
        - {name: fitnet, weight: 1.0, student: layer2, teacher: layer2, until_epoch: 2}
        - {name: kd, weight: 0.9, from_epoch: 3}

Epochs count from 1, as in the training log. Outside training (``DistillBatch.epoch`` left at 0) only terms
whose ``from_epoch`` is 0 are active. :meth:`DistillLoss.forward` applies the window for every loss: an idle
term returns a zero still attached to the student's graph (``base.idle``), so a step in which every term is
idle can still call ``backward()``.
"""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from edgekd.distill.losses.base import LossParams


class ScheduledParams(LossParams):
    """``from_epoch`` / ``until_epoch``: the (inclusive) epochs in which the term counts."""

    from_epoch: int = Field(0, ge=0, description="First epoch (counted from 1) in which the term is active.")
    until_epoch: int | None = Field(
        None, ge=1, description="Last epoch in which the term is active (default: to the end)."
    )

    @field_validator("until_epoch")
    @classmethod
    def _after_start(cls, value: int | None, info: ValidationInfo) -> int | None:
        start = info.data.get("from_epoch", 0)
        if value is not None and value < start:
            raise ValueError(f"must be >= from_epoch ({start}); the term would never be active")
        return value

    def active(self, epoch: int) -> bool:
        """Whether the term counts in ``epoch``."""
        return epoch >= self.from_epoch and (self.until_epoch is None or epoch <= self.until_epoch)
