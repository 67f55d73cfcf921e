"""Registry sweeps for models and tasks: every registered entry gets the same smoke test on real tensors.

Like the loss and importance sweeps (tests/test_losses.py, tests/test_prune.py), the cases are parametrized over
the registry's names, and a guard test fails when an entry has no case here, so a new model or task must add one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from edgekd.models import MODELS, build_model
from edgekd.recipe.schema import ModelSpec
from edgekd.tasks import TASKS, get_task

# -- models ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCase:
    """A small build of one registered model: its recipe ``args``, an input shape and the output it must give."""

    args: dict
    num_classes: int
    in_channels: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


RESNET = ModelCase({"width": 4}, 5, 1, (2, 1, 28, 28), (2, 5))  # narrow: the depth is what differs
MODEL_CASES: dict[str, ModelCase] = {
    "mobilenet_v2": ModelCase({"width_mult": 0.25}, 5, 1, (2, 1, 32, 32), (2, 5)),
    "resnet_cifar": ModelCase({"depth": 8, "width": 4}, 5, 3, (2, 3, 16, 16), (2, 5)),
    "resnet20": RESNET,
    "resnet32": RESNET,
    "resnet44": RESNET,
    "resnet56": RESNET,
    "resnet110": RESNET,
    "unet": ModelCase({"width": 4, "depth": 2}, 3, 1, (2, 1, 16, 16), (2, 3, 16, 16)),
}


def test_every_registered_model_has_a_case():
    assert MODELS.names(), "no model registered"
    assert set(MODELS.names()) == set(MODEL_CASES)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_from_a_recipe_spec_and_runs_a_forward_pass(name: str):
    """Built the way a recipe builds it (``build_model``), with the dataset's classes and channels."""
    case = MODEL_CASES[name]
    torch.manual_seed(0)
    model = build_model(ModelSpec(name=name, args=case.args), case.num_classes, case.in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(case.input_shape))
    assert tuple(out.shape) == case.output_shape
    assert torch.isfinite(out).all()


# -- tasks -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskCase:
    """A tiny batch with hand-computed metrics, and the outputs that predict its targets exactly."""

    outputs: torch.Tensor
    targets: torch.Tensor
    metrics: dict[str, float]
    perfect: torch.Tensor


def _classification() -> TaskCase:
    targets = torch.tensor([0, 1, 2, 0])
    # rows 0-2 predict their target; row 3 ranks class 0 second of three (a top-5 hit, a top-1 miss)
    outputs = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, -1.0, 3.0], [0.5, 1.0, -1.0]])
    perfect = 10 * torch.nn.functional.one_hot(targets, 3).float()
    return TaskCase(outputs, targets, {"accuracy": 0.75, "top5": 1.0}, perfect)


def _regression() -> TaskCase:
    targets = torch.tensor([[1.5, 2.0], [0.0, 0.0]])
    outputs = torch.tensor([[1.0, 2.0], [0.0, -1.0]])  # absolute errors 0.5, 0, 0, 1
    return TaskCase(outputs, targets, {"mae": 0.375}, targets.clone())


def _segmentation() -> TaskCase:
    # 3x3 mask: four pixels of class 0, four of class 1, one ignored (255); one class-0 pixel predicted as 1.
    # Confusion [[3, 1], [0, 4]]: IoU 3/4 and 4/5 (mean 0.775), foreground Dice 8/9, pixel accuracy 7/8.
    targets = torch.tensor([[[0, 0, 0], [0, 1, 1], [1, 1, 255]]])
    predicted = torch.tensor([[[0, 0, 0], [1, 1, 1], [1, 1, 0]]])
    outputs = torch.nn.functional.one_hot(predicted, 2).permute(0, 3, 1, 2).float() * 2 - 1
    perfect = 10 * torch.nn.functional.one_hot(targets.clamp(max=1), 2).permute(0, 3, 1, 2).float()
    return TaskCase(outputs, targets, {"miou": 0.775, "dice": 8 / 9, "pixel_accuracy": 0.875}, perfect)


TASK_CASES = {"classification": _classification, "regression": _regression, "segmentation": _segmentation}


def test_every_registered_task_has_a_case():
    assert TASKS.names(), "no task registered"
    assert set(TASKS.names()) == set(TASK_CASES)


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_computes_its_metrics_on_a_tiny_batch(name: str):
    task, case = get_task(name), TASK_CASES[name]()
    meter = task.meter()
    half = len(case.targets) // 2  # two updates: the meter accumulates over batches
    meter.update(task.output_tensor(case.outputs[:half]), case.targets[:half])
    meter.update(task.output_tensor(case.outputs[half:]), case.targets[half:])
    metrics = meter.compute()
    assert metrics == pytest.approx(case.metrics)
    assert task.primary_metric in metrics

    best = task.meter()
    best.update(case.perfect, case.targets)
    assert best.compute()[task.primary_metric] == (1.0 if task.higher_is_better else 0.0)


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_criterion_and_agreement_work_on_a_tiny_batch(name: str):
    task, case = get_task(name), TASK_CASES[name]()
    criterion = task.criterion()
    outputs = case.outputs.clone().requires_grad_()
    loss = criterion(outputs, case.targets)
    loss.backward()
    assert loss.ndim == 0 and math.isfinite(loss.item()) and outputs.grad is not None
    assert criterion(case.perfect, case.targets).item() < loss.item()  # predicting the targets costs less
    assert task.agreement(case.outputs, case.outputs.clone()) == 1.0
    assert 0.0 <= task.agreement(case.outputs, case.perfect) < 1.0
