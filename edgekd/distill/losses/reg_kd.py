"""Output KD by regression onto the teacher's predictions: ``mean |s − t|^p``, p = 1 (L1) or 2 (MSE).

Hinton KD softens a class distribution; a regression model (gaze angles, keypoints) has no distribution to
soften, so the student matches the teacher's output values directly — the L2 "mimic" loss of Ba & Caruana
("Do deep nets really need to be deep?", NeurIPS 2014), which the gaze thesis (001) used as the output term
beside FitNets hints. The teacher's predictions are smoother targets than noisy labels and exist for every
input, which is why the term helps even when the teacher is not more accurate than the labels.

Numerics: the element mean over all prediction values (N×K, or N×C×H×W logits), so a weight of 1.0 with
``p: 1`` is on the scale of the task's L1 criterion (``ce``, which is the task's criterion: L1 for regression).
Any prediction shape works; the teacher never receives gradient.

Defaults: ``p: 2`` (MSE, the mimic loss); like every teacher-based loss it takes ``from_epoch`` /
``until_epoch``, e.g. to take over after a FitNets hint stage.

Recipe::

    distill: {losses: [{name: ce, weight: 0.5}, {name: reg_kd, weight: 1.0, p: 1}]}
"""

from __future__ import annotations

from typing import Literal

import torch

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses._schedule import ScheduledParams
from edgekd.distill.losses.base import DistillBatch, DistillLoss
from edgekd.errors import InputError


class RegKDParams(ScheduledParams):
    p: Literal[1, 2] = 2


@LOSSES.register("reg_kd")
class RegressionKD(DistillLoss):
    """Match the teacher's output values (L1 or MSE)."""

    Params = RegKDParams

    def compute(self, batch: DistillBatch) -> torch.Tensor:
        teacher = batch.teacher.detach()
        if teacher.shape != batch.student.shape:
            raise InputError(
                f"loss 'reg_kd' compares predictions of equal shape, got student {tuple(batch.student.shape)} "
                f"and teacher {tuple(teacher.shape)}"
            )
        diff = (batch.student - teacher).abs()
        return diff.mean() if self.params.p == 1 else diff.pow(2).mean()
