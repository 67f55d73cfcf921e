"""Regression of K real values per image: L1 criterion, ``mae`` (and ``angular_error_deg`` for gaze), parity
agreement within a tolerance.

Predictions are N×K, targets N×K float values (an N-vector when K = 1).

**Criterion: L1**, not MSE. The reported metric is the mean absolute error, and L1 optimises exactly it; its
gradient has the same size whatever the error's scale, so the learning rates that suit classification also
suit targets in radians (MSE's gradient ``2·err`` shrinks to ~0.1 at gaze errors of a few degrees, which slows
training), and it is robust to the occasional wrong label. ETH-XGaze's baseline (Zhang et al., ECCV 2020) also
trains gaze with L1.

**Metrics**: ``mae`` is the mean of ``|prediction − target|`` over all N·K values, in the targets' unit. When the
dataset says its targets are gaze angles (``DataBundle.target_kind == "gaze_pitch_yaw"``: pitch and yaw in
radians, the MPIIGaze convention), the task also reports ``angular_error_deg``, the mean angle in degrees
between the predicted and the true 3-D gaze vectors, and ranks models by it: that is the number gaze papers
report, and unlike ``mae`` it does not overweight yaw errors when the eye looks up or down.

**Agreement** (parity of exported artifacts): the fraction of samples whose every output is within
``AGREEMENT_TOLERANCE`` (10%) of the reference outputs' spread (their per-output standard deviation over the
compared samples, at least ``1e-6``): the regression analogue of "the top-1 class did not change". Why 10%:
on the gaze recipe's student, INT8 moves predictions by 0.40° on average (p95 0.86°, max 2.8°) at no cost in
angular error (3.905° vs 3.901°), and 99.2% of samples stay within 10% of the spread (~1.5°) but only 93.8%
within 5%. FP32 ONNX files agree on every sample; ``max_abs_diff`` remains the strict gate on numeric drift.

Recipe::

    task: regression
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from edgekd.data.gaze import GAZE_PITCH_YAW, gaze_vector  # the labels' meaning is data's (re-exported)
from edgekd.errors import InputError
from edgekd.tasks import TASKS
from edgekd.tasks.base import MetricMeter, Task

if TYPE_CHECKING:
    from edgekd.data.base import DataBundle

AGREEMENT_TOLERANCE = 0.10


def angular_error_deg(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample angle (degrees) between the gaze vectors of two N×2 ``(pitch, yaw)`` tensors.

    >>> float(angular_error_deg(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.pi / 2]]))[0])
    90.0
    """
    a, b = gaze_vector(predicted.double()), gaze_vector(target.double())
    cosine = (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return torch.rad2deg(torch.arccos(cosine.clamp(-1.0, 1.0)))


def as_target_shape(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``targets`` shaped like ``outputs`` (an N-vector for N×1 outputs); InputError when the sizes differ."""
    if outputs.shape != targets.shape:
        if outputs.ndim != 2 or targets.numel() != outputs.numel():
            raise InputError(
                f"regression expects N×K predictions and N×K targets, got {tuple(outputs.shape)} and "
                f"{tuple(targets.shape)}; set teacher.model.num_classes to the number of target values"
            )
        targets = targets.reshape(outputs.shape)
    return targets.to(outputs.dtype)


class RegressionLoss(nn.Module):
    """Mean absolute error between predictions and targets, with a clear error on a shape mismatch."""

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.l1_loss(outputs, as_target_shape(outputs, targets))


class RegressionMeter(MetricMeter):
    """Sums of absolute errors (all values) and, for gaze, of angular errors (per sample), in float64."""

    def __init__(self, gaze: bool) -> None:
        self.gaze = gaze
        self.abs_error = 0.0
        self.values = 0
        self.angle_error = 0.0
        self.samples = 0

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        targets = as_target_shape(outputs, targets)
        self.abs_error += float((outputs.double() - targets.double()).abs().sum())
        self.values += int(outputs.numel())
        if self.gaze:
            self.angle_error += float(angular_error_deg(outputs, targets).sum())
            self.samples += int(outputs.shape[0])

    def compute(self) -> dict[str, float]:
        metrics = {"mae": self.abs_error / self.values if self.values else math.nan}
        if self.gaze:
            metrics["angular_error_deg"] = self.angle_error / self.samples if self.samples else math.nan
        return metrics


@TASKS.register("regression")
class Regression(Task):
    """Predict K real values per image; lower error is better."""

    name = "regression"
    higher_is_better = False

    def __init__(self, gaze: bool = False) -> None:
        self.gaze = gaze
        self.primary_metric = "angular_error_deg" if gaze else "mae"

    def for_data(self, data: DataBundle) -> Regression:
        """Gaze metrics when the dataset's targets are ``(pitch, yaw)`` angles; plain regression otherwise."""
        gaze = data.target_kind == GAZE_PITCH_YAW
        if gaze and data.num_classes != 2:
            raise InputError(
                f"data '{data.name}': gaze targets are (pitch, yaw) but it has {data.num_classes}"
            )
        return Regression(gaze=gaze)

    def criterion(self, label_smoothing: float = 0.0) -> nn.Module:
        if label_smoothing:
            raise InputError("label_smoothing applies to classification only; set it to 0 for regression")
        return RegressionLoss()

    def meter(self) -> MetricMeter:
        return RegressionMeter(self.gaze)

    def agreement(self, reference: torch.Tensor, candidate: torch.Tensor) -> float:
        """Fraction of samples whose outputs all lie within 10% of the reference outputs' spread (std)."""
        ref, cand = (
            reference.double().reshape(len(reference), -1),
            candidate.double().reshape(len(candidate), -1),
        )
        spread = ref.std(dim=0, unbiased=False) if len(ref) > 1 else ref.abs().mean(dim=0)
        tolerance = AGREEMENT_TOLERANCE * spread.clamp_min(1e-6)
        return float(((ref - cand).abs() <= tolerance).all(dim=1).double().mean())
