"""The task contract shared by training, distillation, export parity and ORT evaluation."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from edgekd.data.base import DataBundle


class MetricMeter(abc.ABC):
    """Accumulates a task's metrics over batches; ``compute()`` returns ``{metric_name: value}``."""

    @abc.abstractmethod
    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None: ...

    @abc.abstractmethod
    def compute(self) -> dict[str, float]: ...


class Task(abc.ABC):
    """A prediction task: its training criterion, metrics, and the parity notion for exported artifacts."""

    name: str
    primary_metric: str
    higher_is_better: bool = True
    dense_output: bool = False  # N×C×H×W predictions (segmentation): enables dense distillation losses

    @abc.abstractmethod
    def criterion(self, label_smoothing: float = 0.0) -> torch.nn.Module:
        """The supervised loss used for teacher training and the ground-truth term of distillation."""

    @abc.abstractmethod
    def meter(self) -> MetricMeter:
        """A fresh metric accumulator."""

    @abc.abstractmethod
    def agreement(self, reference: torch.Tensor, candidate: torch.Tensor) -> float:
        """Fraction of predictions two models agree on (top-1 for classification, pixels for segmentation)."""

    def for_data(self, data: DataBundle) -> Task:
        """This task specialised to what ``data`` says its targets mean (``DataBundle.target_kind``).

        Why: a dataset knows facts about its targets that change the metrics, e.g. regression targets that are
        gaze angles also get ``angular_error_deg``. The default ignores the data.
        """
        return self

    def output_tensor(self, outputs: object) -> torch.Tensor:
        """The prediction tensor of a model's raw output (dict/tuple outputs of some torchvision models)."""
        if isinstance(outputs, torch.Tensor):
            return outputs
        if isinstance(outputs, dict) and "out" in outputs:
            return outputs["out"]
        if isinstance(outputs, list | tuple) and outputs and isinstance(outputs[0], torch.Tensor):
            return outputs[0]
        raise TypeError(
            f"cannot find the prediction tensor in a model output of type {type(outputs).__name__}"
        )
