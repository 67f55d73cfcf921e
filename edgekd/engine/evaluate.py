"""One evaluation loop for PyTorch models and ONNX Runtime sessions alike.

Why one loop: the report puts PyTorch and ORT metrics side by side; they are comparable only if the same
batches go through the same metric code. ``predict`` is any callable from a normalised input batch to the
prediction tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from edgekd.tasks.base import Task

Predict = Callable[[torch.Tensor], torch.Tensor]


def evaluate(
    predict: Predict, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], task: Task, desc: str | None = None
) -> dict[str, float]:
    """Run ``predict`` over ``loader`` and return the task's metrics."""
    meter = task.meter()
    batches = tqdm(loader, desc=desc, leave=False, disable=None if desc else True, unit="batch")
    for images, targets in batches:
        meter.update(predict(images), targets)
    return meter.compute()


def evaluate_model(
    model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], task: Task, desc: str | None = None
) -> dict[str, float]:
    """Evaluate a PyTorch model in eval mode under ``inference_mode`` (restores its training flag).

    The model may sit on a training device (evaluation during training on a GPU): each batch goes there and
    its predictions come back to the CPU, where the metric code runs for PyTorch and ONNX Runtime alike.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device

    def predict(x: torch.Tensor) -> torch.Tensor:
        return task.output_tensor(model(x.to(device, non_blocking=True))).float().cpu()

    try:
        with torch.inference_mode():
            return evaluate(predict, loader, task, desc)
    finally:
        model.train(was_training)
