"""KD with teacher-mistake correction (thesis 002), plus an optional confidence-aware non-target term.

Plain KD teaches the student the teacher's errors: on a sample the teacher misclassifies, the KL pulls the
student towards the wrong class. Here, where the teacher's top-1 differs from the label, its distribution is
fixed before the usual ``T² · KL(teacher ‖ student)`` (batch-mean, as ``kd``):

- ``mode: swap`` (default): exchange the logit of the wrong maximum with the logit of the true class. The label
  becomes the teacher's top-1, and every other logit (the teacher's view of which classes look alike) is kept.
  On samples the teacher gets right, the swap is the identity.
- ``mode: label``: use the one-hot label as the target distribution. The term is then
  ``T² · (−log softmax(s/T)[label])`` on those samples: the same KL formula with a corrected target, so the
  weight keeps its meaning, but nothing of the teacher is kept there.

**Confidence-aware option** (``confidence_threshold``, off by default). When the teacher is right and very
confident (max softmax probability at T=1 ≥ threshold), its other classes hold almost no probability mass. KD
weights their relative information by ``1 − p_target`` (the DKD decomposition), so for these samples it is
nearly lost. This option adds ``confidence_weight · T² · KL`` between the teacher's and student's distributions
over the non-target classes, renormalised to sum to 1 (DKD's NCKD), on those samples only, averaged over the
whole batch. Why this choice: it keeps the ranking of the small logits, which is the information, and it does
not have to raise the temperature for every sample. Confident-but-wrong samples are left to the correction:
their small logits rank classes around a wrong answer.

Defaults: ``temperature: 4``, ``mode: swap``, ``confidence_threshold: null``, ``confidence_weight: 1``.

Recipe::

    distill: {losses: [{name: ce, weight: 0.5}, {name: kd_corrected, weight: 0.5, temperature: 4.0, mode: swap,
                        confidence_threshold: 0.9, confidence_weight: 1.0}]}
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses._logits import kl_rows, non_target, require_class_logits
from edgekd.distill.losses._schedule import ScheduledParams
from edgekd.distill.losses.base import DistillBatch, DistillLoss


class KDCorrectedParams(ScheduledParams):
    temperature: float = Field(4.0, gt=0)
    mode: Literal["swap", "label"] = Field("swap", description="How a wrong teacher distribution is fixed.")
    confidence_threshold: float | None = Field(
        None, gt=0, le=1, description="Teacher max probability (T=1) above which small logits get a term."
    )
    confidence_weight: float = Field(1.0, ge=0, description="Weight of the confident non-target term.")


def swap_to_label(teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``teacher`` with each row's maximum logit exchanged with the label's logit (identity where top-1 = label)."""
    top = teacher.argmax(dim=1, keepdim=True)
    label = target[:, None]
    at_top, at_label = teacher.gather(1, top), teacher.gather(1, label)
    return teacher.scatter(1, top, at_label).scatter(1, label, at_top)


def corrected_kl_rows(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, temperature: float, mode: str
) -> torch.Tensor:
    """Per-sample ``T² · KL(corrected teacher ‖ student)``."""
    if mode == "swap":
        return kl_rows(student, swap_to_label(teacher, target), temperature)
    wrong = teacher.argmax(dim=1) != target
    label_ce = -F.log_softmax(student / temperature, dim=1).gather(1, target[:, None])[:, 0] * temperature**2
    return torch.where(wrong, label_ce, kl_rows(student, teacher, temperature))


def confident_rows(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, temperature: float, threshold: float
) -> torch.Tensor:
    """Per-sample renormalised non-target KL (× T²) where the teacher is right with confidence ≥ threshold."""
    probs = F.softmax(teacher, dim=1)
    mask = (probs.argmax(dim=1) == target) & (probs.max(dim=1).values >= threshold)
    return kl_rows(non_target(student, target), non_target(teacher, target), temperature) * mask


@LOSSES.register("kd_corrected")
class CorrectedKD(DistillLoss):
    """KD that does not teach the teacher's mistakes, optionally keeping confident teachers' small logits."""

    Params = KDCorrectedParams

    def compute(self, batch: DistillBatch) -> torch.Tensor:
        p: KDCorrectedParams = self.params
        require_class_logits("kd_corrected", batch)
        s, t, y = batch.student, batch.teacher.detach(), batch.targets
        rows = corrected_kl_rows(s, t, y, p.temperature, p.mode)
        if p.confidence_threshold is not None and p.confidence_weight > 0:
            rows = rows + p.confidence_weight * confident_rows(s, t, y, p.temperature, p.confidence_threshold)
        return rows.mean()
