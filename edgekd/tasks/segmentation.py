"""Semantic segmentation: per-pixel cross-entropy, ``miou``/``dice``/``pixel_accuracy``, pixel agreement.

Predictions are N×C×H×W logits, targets N×H×W class indices; pixels labelled ``ignore_index`` (255, as in
VOC/Cityscapes) count nowhere: not in the loss, not in any metric.

Why a confusion matrix accumulated over the whole eval set: per-image IoU averages over-weight small images and
classes that appear in few pixels, and are undefined when a class is absent from an image. Dataset-level IoU is
the standard (VOC, Cityscapes) and is the same number whatever the batch size, so the PyTorch and the ONNX
Runtime evaluations of one model agree exactly when their argmax maps do.

Conventions (stated because papers differ):

* ``miou``: mean over classes that occur in the target *or* the prediction (union > 0) of
  ``TP / (TP + FP + FN)``. A class absent from both is excluded, not counted as 1 or 0.
* ``dice``: binary tasks (2 classes) report the foreground Dice ``2TP / (2TP + FP + FN)`` of class 1 (the
  sclera, say); multi-class tasks report the mean per-class Dice over the same present classes as ``miou``.
* ``pixel_accuracy``: correct labelled pixels / labelled pixels.

Recipe::

    task: segmentation
"""

from __future__ import annotations

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.tasks import TASKS
from edgekd.tasks.base import MetricMeter, Task

IGNORE_INDEX = 255


class SegmentationMeter(MetricMeter):
    """Accumulates a C×C confusion matrix (rows: target, columns: prediction) over labelled pixels."""

    def __init__(self, ignore_index: int | None = IGNORE_INDEX) -> None:
        self.ignore_index = ignore_index
        self.confusion: torch.Tensor | None = None

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if outputs.ndim != 4 or targets.ndim != 3:
            raise InputError(
                f"segmentation expects N×C×H×W predictions and N×H×W masks, got {tuple(outputs.shape)} "
                f"and {tuple(targets.shape)}; check task and teacher.model"
            )
        if outputs.shape[-2:] != targets.shape[-2:]:
            raise InputError(
                f"segmentation predictions are {tuple(outputs.shape[-2:])} but masks are "
                f"{tuple(targets.shape[-2:])}; the model must predict at the input resolution"
            )
        self.update_labels(outputs.argmax(dim=1), targets, int(outputs.shape[1]))

    def update_labels(self, predicted: torch.Tensor, targets: torch.Tensor, num_classes: int) -> None:
        """Add N×H×W predicted class maps against N×H×W targets (``num_classes`` fixes the matrix size)."""
        if self.confusion is None:
            self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        elif self.confusion.shape[0] != num_classes:
            raise InputError(f"segmentation: {num_classes} classes after {self.confusion.shape[0]}")
        target = targets.reshape(-1).to(torch.int64).cpu()
        pred = predicted.reshape(-1).to(torch.int64).cpu()
        keep = (
            target != self.ignore_index
            if self.ignore_index is not None
            else torch.ones_like(target, dtype=torch.bool)
        )
        target, pred = target[keep], pred[keep]
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
            raise InputError(
                f"segmentation mask holds class {int(target.max())} but the model predicts {num_classes} "
                f"classes (labels must be 0..{num_classes - 1} or the ignore index {self.ignore_index})"
            )
        self.confusion += torch.bincount(target * num_classes + pred, minlength=num_classes**2).view(
            num_classes, num_classes
        )

    def compute(self) -> dict[str, float]:
        return segmentation_metrics(self.confusion)


def segmentation_metrics(confusion: torch.Tensor | None) -> dict[str, float]:
    """``miou``, ``dice`` and ``pixel_accuracy`` of a confusion matrix (rows target, columns prediction).

    >>> segmentation_metrics(torch.tensor([[3, 1], [0, 4]]))  # doctest: +ELLIPSIS
    {'miou': 0.775, 'dice': 0.888..., 'pixel_accuracy': 0.875}
    """
    if confusion is None or int(confusion.sum()) == 0:
        return {"miou": 0.0, "dice": 0.0, "pixel_accuracy": 0.0}
    cm = confusion.double()
    tp = cm.diag()
    fp = cm.sum(dim=0) - tp
    fn = cm.sum(dim=1) - tp
    union = tp + fp + fn
    present = union > 0
    iou = tp[present] / union[present]
    dice_per_class = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    if cm.shape[0] == 2:
        dice = float(dice_per_class[1]) if bool(present[1]) else 0.0
    else:
        dice = float(dice_per_class[present].mean())
    return {
        "miou": float(iou.mean()),
        "dice": dice,
        "pixel_accuracy": float(tp.sum() / cm.sum()),
    }


@TASKS.register("segmentation")
class Segmentation(Task):
    """Per-pixel classification into ``num_classes`` classes (class 0 is usually the background)."""

    name = "segmentation"
    primary_metric = "miou"
    dense_output = True

    def __init__(self, ignore_index: int | None = IGNORE_INDEX) -> None:
        self.ignore_index = ignore_index

    def criterion(self, label_smoothing: float = 0.0) -> nn.Module:
        return nn.CrossEntropyLoss(
            ignore_index=-100 if self.ignore_index is None else self.ignore_index,
            label_smoothing=label_smoothing,
        )

    def meter(self) -> MetricMeter:
        return SegmentationMeter(self.ignore_index)

    def agreement(self, reference: torch.Tensor, candidate: torch.Tensor) -> float:
        """Fraction of pixels whose argmax class is the same in both outputs."""
        return float((reference.argmax(dim=1) == candidate.argmax(dim=1)).double().mean())
