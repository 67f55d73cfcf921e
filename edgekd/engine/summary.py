"""A model as the report states it: parameters, MACs (batch 1, the one counter) and PyTorch eval metrics."""

from __future__ import annotations

from torch import nn

from edgekd.data.base import DataBundle
from edgekd.engine.evaluate import evaluate_model
from edgekd.errors import InputError
from edgekd.models.complexity import count_complexity
from edgekd.results import ModelSummary
from edgekd.tasks.base import Task


def summarize(
    model: nn.Module, data: DataBundle, task: Task, batch_size: int, what: str = "teacher.model"
) -> ModelSummary:
    """Params, MACs and PyTorch metrics of ``model`` on the test and validation splits (``what`` names it).

    Raises:
        InputError: the MACs counter (a ``torch.jit`` trace) cannot trace the model; names what it tripped on.
    """
    try:
        cost = count_complexity(model, data.example_input(1))
    except Exception as exc:  # the tracer raises RuntimeError/TypeError/… on whatever it cannot follow
        detail = " ".join(str(exc).split())[:240] or type(exc).__name__
        raise InputError(
            f"{what}: the MACs counter cannot trace the model ({type(exc).__name__}: {detail}); make forward "
            "traceable: tensor outputs, no Python control flow on tensor values"
        ) from exc
    metrics = evaluate_model(model, data.eval_loader(batch_size), task)
    val_loader = data.val_loader(batch_size)
    val_metrics = evaluate_model(model, val_loader, task) if val_loader is not None else {}
    return ModelSummary(params=cost.params, macs=cost.macs, metrics=metrics, val_metrics=val_metrics)
