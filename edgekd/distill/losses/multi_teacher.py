"""Confidence-aware multi-teacher KD in the style of CA-MKD (Zhang, Chen & Wang, ICASSP 2022, arXiv:2201.00007).

Averaging several teachers lets a teacher that is wrong on a sample pull the student as hard as one that is
right. Here every teacher ``k`` gets a per-sample weight from its cross-entropy on the label,
``w_k = softmax_k(−CE_k)``, so on each sample the teachers that predict the label best dominate::

    multi_teacher = mean_i Σ_k w_{k,i} · T² · KL(softmax(t_k/T) ‖ softmax(s/T))_i

CA-MKD itself uses ``w_k = (1 − softmax_k(CE_k)) / (K − 1)``, which is undefined for one teacher, and adds an
intermediate-feature term. ``softmax(−CE)`` also sums to 1 over the teachers, favours the same teachers, and
with one teacher gives ``w = 1``, so the loss is exactly ``kd``. The weights carry no gradient. The teachers are
``batch.teachers``, the unpruned original first.

Defaults: ``temperature: 4``.

Recipe::

    distill: {losses: [{name: ce, weight: 0.5}, {name: multi_teacher, weight: 0.5, temperature: 4.0}]}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses._logits import kl_rows, require_class_logits
from edgekd.distill.losses._schedule import ScheduledParams, idle
from edgekd.distill.losses.base import DistillBatch, DistillLoss


class MultiTeacherParams(ScheduledParams):
    temperature: float = Field(4.0, gt=0)


def teacher_weights(teachers: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """K×N weights ``softmax_k(−CE(t_k, label))``: per sample, summing to 1 over the teachers."""
    ce = torch.stack([F.cross_entropy(t, target, reduction="none") for t in teachers])
    return F.softmax(-ce, dim=0)


@LOSSES.register("multi_teacher")
class MultiTeacherKD(DistillLoss):
    """KD from every teacher, each sample weighted towards the teachers that get its label right."""

    Params = MultiTeacherParams

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        p: MultiTeacherParams = self.params
        if not p.active(batch.epoch):
            return idle(batch)
        require_class_logits("multi_teacher", batch)
        teachers = [t.detach() for t in batch.teachers]
        weights = teacher_weights(teachers, batch.targets)
        kls = torch.stack([kl_rows(batch.student, t, p.temperature) for t in teachers])
        return (weights * kls).sum(dim=0).mean()
