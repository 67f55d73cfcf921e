"""Tasks: what a model's output means, how it is scored, and how two outputs are compared for parity.

Why a task object: the same metric code must score the PyTorch student and the ONNX Runtime artifact (the
report's ORT numbers are only comparable if they are computed identically), and segmentation/regression plug in
by registering another task, not by ``if task == ...`` branches across the pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgekd.registry import Registry
from edgekd.tasks.base import MetricMeter, Task

if TYPE_CHECKING:
    from edgekd.data.base import DataBundle

TASKS: Registry[type[Task]] = Registry("task")

from edgekd.tasks import classification, regression, segmentation  # noqa: E402,F401,I001  (registers)


def get_task(name: str, data: DataBundle | None = None) -> Task:
    """Instantiate the registered task ``name``, specialised to ``data``'s targets when given (gaze angles)."""
    task = TASKS.get(name)()
    return task.for_data(data) if data is not None else task


__all__ = ["TASKS", "MetricMeter", "Task", "get_task"]
