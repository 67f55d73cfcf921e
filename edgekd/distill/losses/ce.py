"""Ground-truth supervision: the task's own criterion on the labels (cross-entropy for classification).

Recipe::

    distill: {losses: [{name: ce, weight: 0.1, label_smoothing: 0.0}, ...]}
"""

from __future__ import annotations

import torch
from pydantic import Field

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses.base import DistillBatch, DistillLoss, LossContext, LossParams


class CEParams(LossParams):
    label_smoothing: float = Field(0.0, ge=0, lt=1)


@LOSSES.register("ce")
class TaskLoss(DistillLoss):
    """The task criterion against the labels; keeps the student anchored to the truth the teacher may miss."""

    Params = CEParams
    needs_teacher = False

    def __init__(self, params: CEParams, ctx: LossContext) -> None:
        super().__init__(params, ctx)
        self.criterion = ctx.task.criterion(params.label_smoothing)

    def compute(self, batch: DistillBatch) -> torch.Tensor:
        return self.criterion(batch.student, batch.targets)
