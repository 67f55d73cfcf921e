"""Tasks: what a model's output means, how it is scored, and how two outputs are compared for parity.

Why a task object: the same metric code must score the PyTorch student and the ONNX Runtime artifact (the
report's ORT numbers are only comparable if they are computed identically), and segmentation/regression plug in
by registering another task, not by ``if task == ...`` branches across the pipeline.
"""

from __future__ import annotations

from edgekd.registry import Registry
from edgekd.tasks.base import MetricMeter, Task

TASKS: Registry[type[Task]] = Registry("task")

from edgekd.tasks import classification  # noqa: E402,F401  (registers)


def get_task(name: str) -> Task:
    """Instantiate the registered task ``name``."""
    return TASKS.get(name)()


__all__ = ["TASKS", "MetricMeter", "Task", "get_task"]
