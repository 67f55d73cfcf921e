"""The distillation loss contract: one class per method, registered by name, parameters validated up front.

A loss sees one :class:`DistillBatch` — student and teacher predictions, labels, and the features hooked by
module name on both models — and returns a scalar. Losses are ``nn.Module``\\ s so that what they learn
(e.g. FitNets adaptors, built from the hooked shapes in :class:`LossContext`) trains with the student and is
dropped before export, since it never becomes part of the student.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from edgekd.tasks.base import Task


class LossParams(BaseModel):
    """Base of every loss's own recipe parameters (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def active(self, epoch: int) -> bool:
        """Whether the term counts in ``epoch``: always, unless the params add an epoch window
        (``ScheduledParams`` in ``_schedule.py``)."""
        return True


@dataclass
class DistillBatch:
    student: torch.Tensor
    teachers: list[torch.Tensor]
    targets: torch.Tensor
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: list[dict[str, torch.Tensor]] = field(default_factory=list)
    epoch: int = 0

    @property
    def teacher(self) -> torch.Tensor:
        """The first (usually the only) teacher's prediction."""
        return self.teachers[0]


@dataclass(frozen=True)
class LossContext:
    """What a loss may need at construction: the task and the shapes of the features it hooks."""

    task: Task
    num_classes: int
    student_shapes: dict[str, torch.Size] = field(default_factory=dict)
    teacher_shapes: dict[str, torch.Size] = field(default_factory=dict)


class DistillLoss(nn.Module):
    """Base class. Subclasses set ``Params`` and implement :meth:`compute` (the loss's math only); feature losses
    override :meth:`hooked_modules` to name the modules whose outputs they need.

    Why :meth:`forward` is not overridden: it applies the term's epoch window (``from_epoch`` / ``until_epoch``,
    see ``_schedule.py``) once for every loss. Outside the window it returns :func:`idle` without calling
    :meth:`compute`, so a loss never checks the epoch itself and an idle term skips its math.
    """

    Params: ClassVar[type[LossParams]] = LossParams
    needs_teacher: ClassVar[bool] = True
    # Dense losses read N×C×H×W predictions; the recipe loader refuses them for tasks without dense outputs.
    dense: ClassVar[bool] = False

    def __init__(self, params: LossParams, ctx: LossContext) -> None:
        super().__init__()
        self.params = params
        self.ctx = ctx

    @classmethod
    def hooked_modules(cls, params: LossParams) -> tuple[list[str], list[str]]:
        """(student module names, teacher module names) whose outputs this loss reads."""
        return [], []

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        """The loss on ``batch``, or a graph-connected zero when ``batch.epoch`` is outside the term's window."""
        if not self.params.active(batch.epoch):
            return idle(batch)
        return self.compute(batch)

    def compute(self, batch: DistillBatch) -> torch.Tensor:  # pragma: no cover - abstract
        """The scalar loss on ``batch``; called only inside the term's epoch window."""
        raise NotImplementedError


def idle(batch: DistillBatch) -> torch.Tensor:
    """A zero loss attached to the student's graph (its gradient is zero, but ``backward()`` works).

    Why attached: a step in which every term is idle (e.g. between two windows) must still be able to call
    ``backward()``. Feature losses also start their sums from it.
    """
    return batch.student.sum() * 0.0
