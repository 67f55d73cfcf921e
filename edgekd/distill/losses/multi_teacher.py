"""Confidence-aware multi-teacher KD in the style of CA-MKD (Zhang, Chen & Wang, ICASSP 2022, arXiv:2201.00007),
for class logits and, per pixel, for segmentation (thesis 004: multi-teacher, boundary-weighted KD).

Averaging several teachers lets a teacher that is wrong on a sample pull the student as hard as one that is
right. Here every teacher ``k`` gets a weight from its cross-entropy on the label, ``w_k = softmax_k(−CE_k)``,
so the teachers that predict the label best dominate::

    class logits:  multi_teacher = mean_i Σ_k w_{k,i} · T² · KL(softmax(t_k/T) ‖ softmax(s/T))_i

For N×C×H×W predictions the same holds **per pixel** (each pixel has its own label, so on one image teacher A
may lead on the shirt and teacher B on the bag), averaged over valid pixels with the boundary weighting of
``boundary_kd``::

    dense:         multi_teacher = Σ_p b_p · Σ_k w_{k,p} · T²·KL_{k,p} / Σ_p b_p
                   b_p = valid_p · (1 + boundary_weight · [p within `band` pixels of a label boundary])

CA-MKD itself uses ``w_k = (1 − softmax_k(CE_k)) / (K − 1)``, which is undefined for one teacher, and adds an
intermediate-feature term. ``softmax(−CE)`` also sums to 1 over the teachers, favours the same teachers, and
with one teacher gives ``w = 1``: the loss is then exactly ``kd`` (class logits), ``pixel_kd``
(``boundary_weight: 0``) or ``boundary_kd`` with ``boundary_from: label``. The weights carry no gradient. The
teachers are ``batch.teachers``, the unpruned original first, then ``distill.extra_teachers``.

Defaults: ``temperature: 4`` (set 1 for segmentation, as ``pixel_kd`` does), ``boundary_weight: 0``,
``band: 2``, ``ignore_index: 255`` (the last three apply to dense predictions only).

Recipe::

    distill:
      extra_teachers: [{model: {name: unet, args: {width: 10}}, checkpoint: teachers/second.pt}]
      losses: [{name: ce, weight: 1.0}, {name: multi_teacher, weight: 1.0, temperature: 1.0, boundary_weight: 4}]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses._dense import labels_on_grid, pixel_kl, pixel_mean, valid_pixels
from edgekd.distill.losses._features import resize_to
from edgekd.distill.losses._logits import kl_rows, require_class_logits
from edgekd.distill.losses._schedule import ScheduledParams
from edgekd.distill.losses.base import DistillBatch, DistillLoss
from edgekd.errors import InputError


class MultiTeacherParams(ScheduledParams):
    temperature: float = Field(4.0, gt=0)
    boundary_weight: float = Field(
        0.0,
        ge=0,
        description="Dense only: extra weight of pixels near label boundaries (they count 1 + this).",
    )
    band: int = Field(2, ge=1, description="Dense only: half-width in pixels of the boundary band.")
    ignore_index: int | None = Field(
        255, description="Dense only: label value excluded from the loss (null: none)."
    )


def teacher_weights(teachers: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """K×… weights ``softmax_k(−CE(t_k, label))`` per sample (N) or per pixel (N×H×W), summing to 1 over k."""
    ce = torch.stack([F.cross_entropy(t, target, reduction="none") for t in teachers])
    return F.softmax(-ce, dim=0)


@LOSSES.register("multi_teacher")
class MultiTeacherKD(DistillLoss):
    """KD from every teacher, each sample (or pixel) weighted towards the teachers that get its label right."""

    Params = MultiTeacherParams

    def compute(self, batch: DistillBatch) -> torch.Tensor:
        p: MultiTeacherParams = self.params
        if batch.student.ndim == 4:
            return self._dense(batch, p)
        require_class_logits("multi_teacher", batch)
        teachers = [t.detach() for t in batch.teachers]
        weights = teacher_weights(teachers, batch.targets)
        kls = torch.stack([kl_rows(batch.student, t, p.temperature) for t in teachers])
        return (weights * kls).sum(dim=0).mean()

    @staticmethod
    def _dense(batch: DistillBatch, p: MultiTeacherParams) -> torch.Tensor:
        grid = batch.teacher.shape[-2:]  # every teacher and the student compared on the first teacher's grid
        teachers = [resize_to(t.detach(), grid) for t in batch.teachers]
        labels = labels_on_grid(batch.targets, grid)
        if labels is None:
            raise InputError(
                "multi_teacher: dense predictions need N×H×W label maps to weigh the teachers per pixel, got "
                f"labels of shape {tuple(batch.targets.shape)}"
            )
        student = resize_to(batch.student, grid)
        kls = torch.stack([pixel_kl(student, t, p.temperature) for t in teachers])
        valid = valid_pixels(labels, kls[0], p.ignore_index)
        # Ignored pixels get label 0 for the teachers' CE: any class would do, valid = 0 drops them.
        weights = teacher_weights(teachers, labels.masked_fill(valid == 0, 0))
        return pixel_mean((weights * kls).sum(dim=0), valid, labels, p.band, p.boundary_weight)
