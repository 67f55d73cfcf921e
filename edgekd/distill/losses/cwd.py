"""Channel-wise distillation, CWD (Shu, Liu, Gao, Yan & Shen, ICCV 2021, arXiv:2011.13256).

Each channel of a dense prediction is turned into a distribution over *locations*, ``softmax(y_c / τ)`` over
H×W. The student matches the teacher's per channel, so it learns where each class is most salient rather than
every pixel's exact distribution::

    cwd = τ² / (N · C) · Σ_{n,c} KL(softmax(t_{n,c}/τ) ‖ softmax(s_{n,c}/τ))    (KL over the H·W locations)

This is the normalisation of the authors' released code. The student's logits are resized to the teacher's grid
if they differ. Applied to N×C×H×W predictions (a segmentation head's logits); class logits have a single
location, so they are refused.

Defaults: ``temperature: 1`` (τ in the authors' released segmentation configs, which use loss weights 3–10).

Recipe::

    distill: {losses: [{name: ce, weight: 1.0}, {name: cwd, weight: 3.0, temperature: 1.0}]}
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses._dense import dense_pair
from edgekd.distill.losses._schedule import ScheduledParams
from edgekd.distill.losses.base import DistillBatch, DistillLoss


class CWDParams(ScheduledParams):
    temperature: float = Field(1.0, gt=0, description="τ of the spatial softmax.")


def channel_wise_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``τ² · mean_{n,c} KL`` of the per-channel spatial softmaxes of two N×C×H×W maps."""
    log_p_s = F.log_softmax(student.flatten(2) / temperature, dim=2)
    log_p_t = F.log_softmax(teacher.flatten(2) / temperature, dim=2)
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=2)
    return kl.mean() * temperature**2


@LOSSES.register("cwd")
class ChannelWiseDistillation(DistillLoss):
    """Where each class channel is most active, as a distribution over locations."""

    Params = CWDParams
    dense: ClassVar[bool] = True  # needs N×C×H×W predictions (segmentation)

    def compute(self, batch: DistillBatch) -> torch.Tensor:
        student, teacher = dense_pair("cwd", batch)
        return channel_wise_kl(student, teacher, self.params.temperature)
