"""Image classification: cross-entropy, ``accuracy`` and ``top5`` (fractions), top-1 agreement for parity."""

from __future__ import annotations

import torch
from torch import nn

from edgekd.tasks import TASKS
from edgekd.tasks.base import MetricMeter, Task


class ClassificationMeter(MetricMeter):
    def __init__(self) -> None:
        self.correct1 = 0
        self.correct5 = 0
        self.count = 0

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        k = min(5, outputs.shape[1])
        topk = outputs.topk(k, dim=1).indices
        hits = topk.eq(targets.view(-1, 1))
        self.correct1 += int(hits[:, 0].sum())
        self.correct5 += int(hits.any(dim=1).sum())
        self.count += int(targets.numel())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {"accuracy": 0.0, "top5": 0.0}
        return {"accuracy": self.correct1 / self.count, "top5": self.correct5 / self.count}


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    primary_metric = "accuracy"

    def criterion(self, label_smoothing: float = 0.0) -> nn.Module:
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def meter(self) -> MetricMeter:
        return ClassificationMeter()

    def agreement(self, reference: torch.Tensor, candidate: torch.Tensor) -> float:
        return float((reference.argmax(dim=1) == candidate.argmax(dim=1)).float().mean())
