"""Hinton knowledge distillation (Hinton, Vinyals & Dean, 2015, arXiv:1503.02531).

``T² · KL(softmax(t/T) ‖ softmax(s/T))``, batch-mean. The ``T²`` factor keeps the gradient scale of the soft term
independent of the temperature, so its weight can be tuned once. Defaults: ``temperature: 4``; like every
teacher-based loss it takes ``from_epoch`` / ``until_epoch`` (see ``_schedule.py``), e.g. to start after a
FitNets hint stage.

Recipe::

    distill: {losses: [{name: ce, weight: 0.1}, {name: kd, weight: 0.9, temperature: 4.0}]}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses._schedule import ScheduledParams
from edgekd.distill.losses.base import DistillBatch, DistillLoss


class KDParams(ScheduledParams):
    temperature: float = Field(4.0, gt=0)


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature-scaled KL(teacher ‖ student) over the class dimension (dim 1), batch-mean, times T²."""
    log_p_s = F.log_softmax(student / temperature, dim=1)
    log_p_t = F.log_softmax(teacher / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1)
    return kl.mean() * temperature**2


@LOSSES.register("kd")
class HintonKD(DistillLoss):
    """Match the teacher's softened class distribution."""

    Params = KDParams

    def compute(self, batch: DistillBatch) -> torch.Tensor:
        return soft_kl(batch.student, batch.teacher.detach(), self.params.temperature)
