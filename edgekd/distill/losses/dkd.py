"""Decoupled knowledge distillation, DKD (Zhao, Cui, Song, Qiu & Liang, CVPR 2022, arXiv:2203.08679).

Hinton's KD loss splits exactly into a *target-class* term (TCKD: the binary distribution [p_target,
1 − p_target]) and a *non-target* term (NCKD: the distribution over the other classes, renormalised) that
KD weights by ``1 − p_target`` of the teacher. A confident teacher therefore all but silences NCKD, the "dark
knowledge". DKD weights the two terms freely::

    DKD = warm-up(epoch) · (α · TCKD + β · NCKD),   each term T² · KL(teacher ‖ student), batch-mean

The warm-up is linear over epochs: ``min(epoch / warmup, 1)``, epochs counted from 1 (outside training,
epoch 0 counts as the first).

Defaults: ``alpha: 1``, ``beta: 8``, ``temperature: 4`` (the paper's CIFAR-100 setting), and ``warmup: 2``
epochs (the paper warms up for 20 of 240). The warm-up matters after pruning too. The quickstart's pruned
student starts at 16% accuracy, with effectively random non-target distributions, and β = 8 makes their
gradient dominate. Without a warm-up, 2 recovery epochs ended at 42% (CE alone: 88%). With ``warmup: 2`` they
reached 88% (``benchmarks/RESULTS.md``, issue 4). ``warmup: 0`` turns it off.

Recipe::

    distill: {losses: [{name: ce, weight: 1.0}, {name: dkd, weight: 1.0, alpha: 1.0, beta: 8.0, temperature: 4.0,
                        warmup: 2}]}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses._logits import non_target, require_class_logits
from edgekd.distill.losses._schedule import ScheduledParams
from edgekd.distill.losses.base import DistillBatch, DistillLoss


class DKDParams(ScheduledParams):
    alpha: float = Field(1.0, ge=0, description="Weight of the target-class term (TCKD).")
    beta: float = Field(8.0, ge=0, description="Weight of the non-target term (NCKD).")
    temperature: float = Field(4.0, gt=0)
    warmup: int = Field(2, ge=0, description="Epochs of linear warm-up of the whole term (0 = none).")


def binary_log_probs(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """N×2 log-probabilities ``[log p_target, log(1 − p_target)]`` at temperature ``T``, computed stably."""
    log_p = F.log_softmax(logits / temperature, dim=1)
    log_target = log_p.gather(1, target[:, None])
    log_rest = torch.logsumexp(non_target(log_p, target), dim=1, keepdim=True)
    return torch.cat([log_target, log_rest], dim=1)


def dkd_terms(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-mean ``(TCKD, NCKD)``, each ``T² · KL(teacher ‖ student)``."""
    t2 = temperature**2
    b_s = binary_log_probs(student, target, temperature)
    b_t = binary_log_probs(teacher, target, temperature)
    tckd = F.kl_div(b_s, b_t, reduction="none", log_target=True).sum(1).mean() * t2
    n_s = F.log_softmax(non_target(student, target) / temperature, dim=1)
    n_t = F.log_softmax(non_target(teacher, target) / temperature, dim=1)
    nckd = F.kl_div(n_s, n_t, reduction="none", log_target=True).sum(1).mean() * t2
    return tckd, nckd


@LOSSES.register("dkd")
class DecoupledKD(DistillLoss):
    """Target and non-target KD terms with their own weights, so the dark knowledge is not suppressed."""

    Params = DKDParams

    def compute(self, batch: DistillBatch) -> torch.Tensor:
        p: DKDParams = self.params
        require_class_logits("dkd", batch)
        tckd, nckd = dkd_terms(batch.student, batch.teacher.detach(), batch.targets, p.temperature)
        ramp = min(max(batch.epoch, 1) / p.warmup, 1.0) if p.warmup else 1.0
        return ramp * (p.alpha * tckd + p.beta * nckd)
