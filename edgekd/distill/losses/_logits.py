"""Helpers shared by the logit losses: shape checks and the per-sample, temperature-scaled KL.

Numerics, stated once for every logit loss here: KL(teacher ‖ student) over the class dimension, per sample;
the loss is the batch mean of the per-sample values times ``T²``, exactly as :func:`kd.soft_kl`. So a weight
of 1.0 means the same for ``kd``, ``dkd``, ``kd_corrected``, ``multi_teacher`` and the logit part of
``channel_corr``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.losses.base import DistillBatch
from edgekd.errors import InputError


def require_class_logits(name: str, batch: DistillBatch) -> None:
    """Raise unless the batch holds N×C class logits with N integer labels (classification)."""
    if batch.student.ndim != 2 or batch.targets.ndim != 1:
        raise InputError(
            f"loss '{name}' needs N×C class logits and N labels, got predictions of shape "
            f"{tuple(batch.student.shape)}; for dense predictions use pixel_kd, cwd, boundary_kd or multi_teacher"
        )


def kl_rows(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` over dim 1 (shape N)."""
    log_p_s = F.log_softmax(student / temperature, dim=1)
    log_p_t = F.log_softmax(teacher / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1) * temperature**2


def non_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The N×(C−1) logits of every class except ``target`` (in class order)."""
    n, c = logits.shape
    keep = torch.ones_like(logits, dtype=torch.bool).scatter_(1, target[:, None], False)
    return logits[keep].view(n, c - 1)
