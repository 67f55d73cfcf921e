"""Helpers shared by the dense-prediction losses (``pixel_kd``, ``cwd``, ``boundary_kd``, dense ``multi_teacher``).

Conventions: predictions are N×C×H×W logits; labels are N×H×W class indices, with ``ignore_index`` (255 by
default, as in VOC/Cityscapes) marking pixels that count nowhere. If the student's grid differs from the
teacher's, the student's logits are resized bilinearly to the teacher's grid, and labels are resized (nearest)
to that grid too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.losses._features import resize_to
from edgekd.distill.losses.base import DistillBatch
from edgekd.errors import InputError


def dense_pair(name: str, batch: DistillBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(student, teacher) N×C×H×W logits on the teacher's grid; the teacher detached."""
    student, teacher = batch.student, batch.teacher.detach()
    if student.ndim != 4 or teacher.ndim != 4:
        raise InputError(
            f"loss '{name}' compares N×C×H×W dense predictions, got {tuple(student.shape)}; "
            "for class logits use kd, dkd, dist or kd_corrected"
        )
    return resize_to(student, teacher.shape[-2:]), teacher


def labels_on_grid(targets: torch.Tensor, size: torch.Size | tuple[int, ...]) -> torch.Tensor | None:
    """N×H×W labels on ``size`` (nearest resize), or ``None`` when ``targets`` is not a label map."""
    if targets.ndim != 3:
        return None
    if tuple(targets.shape[-2:]) == tuple(size):
        return targets
    return F.interpolate(targets[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


def valid_pixels(labels: torch.Tensor | None, like: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """N×H×W float mask: 0 on ignored label pixels, 1 elsewhere (all ones without labels)."""
    if labels is None or ignore_index is None:
        return torch.ones_like(like)
    return (labels != ignore_index).to(like.dtype)


def pixel_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """N×H×W per-pixel ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` over the class dimension."""
    log_p_s = F.log_softmax(student / temperature, dim=1)
    log_p_t = F.log_softmax(teacher / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1) * temperature**2


def boundary_band(classes: torch.Tensor, band: int) -> torch.Tensor:
    """N×H×W bool: pixels with a pixel of another class within ``band`` pixels (Chebyshev distance)."""
    x = classes[:, None].float()
    size = 2 * band + 1
    highest = F.max_pool2d(x, size, stride=1, padding=band)
    lowest = -F.max_pool2d(-x, size, stride=1, padding=band)
    return (highest != lowest)[:, 0]


def pixel_mean(
    per_pixel: torch.Tensor,
    valid: torch.Tensor,
    boundary_classes: torch.Tensor | None = None,
    band: int = 2,
    boundary_weight: float = 0.0,
) -> torch.Tensor:
    """Mean of an N×H×W per-pixel loss over valid pixels, pixels near a boundary of ``boundary_classes``
    counted ``1 + boundary_weight`` times (``pixel_kd``, ``boundary_kd`` and dense ``multi_teacher`` share it,
    so their weights mean the same)."""
    weights = valid
    if boundary_classes is not None and boundary_weight:
        weights = valid * (1.0 + boundary_weight * boundary_band(boundary_classes, band).to(valid.dtype))
    return (weights * per_pixel).sum() / weights.sum().clamp_min(1.0)
