"""Pixel-wise KD for dense prediction (the pixel-wise term of Liu et al., "Structured Knowledge Distillation for
Semantic Segmentation", CVPR 2019, arXiv:1903.04197).

Every pixel is a classification problem, so Hinton's KD applies per pixel::

    pixel_kd = mean over valid pixels of T² · KL(softmax(t/T) ‖ softmax(s/T))     (KL over the class dimension)

Pixels whose label is ``ignore_index`` are left out; with labels that are not an N×H×W map, every pixel counts.
The student's logits are resized to the teacher's grid if they differ. Weights mean the same as for ``kd``: a
per-sample KL there, a per-pixel KL here, both ``T²``-scaled means.

Defaults: ``temperature: 1`` (the paper's; segmentation logits are already soft at object borders),
``ignore_index: 255``.

Recipe::

    distill: {losses: [{name: ce, weight: 1.0}, {name: pixel_kd, weight: 1.0, temperature: 1.0, ignore_index: 255}]}
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses._dense import dense_pair, labels_on_grid, pixel_kl, pixel_mean, valid_pixels
from edgekd.distill.losses._schedule import ScheduledParams
from edgekd.distill.losses.base import DistillBatch, DistillLoss


class PixelKDParams(ScheduledParams):
    temperature: float = Field(1.0, gt=0)
    ignore_index: int | None = Field(255, description="Label value excluded from the loss (null: none).")


@LOSSES.register("pixel_kd")
class PixelKD(DistillLoss):
    """The teacher's per-pixel class distribution, on every pixel that has a label."""

    Params = PixelKDParams
    dense: ClassVar[bool] = True  # needs N×C×H×W predictions (segmentation)
    loss_name: ClassVar[str] = "pixel_kd"  # its registry name, for error messages

    def compute(self, batch: DistillBatch) -> torch.Tensor:
        p: PixelKDParams = self.params
        student, teacher = dense_pair(self.loss_name, batch)
        kl = pixel_kl(student, teacher, p.temperature)
        labels = labels_on_grid(batch.targets, kl.shape[-2:])
        valid = valid_pixels(labels, kl, p.ignore_index)
        return self.pixel_average(kl, valid, labels, batch)

    def pixel_average(
        self, kl: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor | None, batch: DistillBatch
    ) -> torch.Tensor:
        """The loss from the N×H×W per-pixel KLs: their plain mean over ``valid`` pixels. ``labels`` (N×H×W on
        the KL's grid, or ``None``) and ``batch`` are there for subclasses that weight pixels (``boundary_kd``)."""
        return pixel_mean(kl, valid)
