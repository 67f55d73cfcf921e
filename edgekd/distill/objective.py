"""Compose the recipe's weighted losses into one training objective over student and teacher(s).

The objective owns the feature hooks and the loss modules (with their adaptors), runs the frozen teachers in
``eval`` + ``inference_mode``, and reports each weighted term separately so the history shows what drove
training.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekd.distill.hooks import FeatureHooks
from edgekd.distill.losses import LOSSES
from edgekd.distill.losses.base import DistillBatch, LossContext
from edgekd.distill.params import parse_loss_params
from edgekd.recipe.schema import LossSpec
from edgekd.tasks.base import Task


class DistillObjective(nn.Module):
    """``objective(images, targets) -> (loss, {term: value})`` for :func:`edgekd.engine.trainer.fit`.

    Only the loss modules are submodules (their adaptors train with the student); the student and teachers
    are held by reference so that the student's weights are not duplicated in the objective's state dict.
    """

    def __init__(
        self,
        student: nn.Module,
        teachers: list[nn.Module],
        specs: list[LossSpec],
        task: Task,
        num_classes: int,
        example_input: torch.Tensor,
    ) -> None:
        super().__init__()
        self._student = [student]
        self._teachers = teachers
        self.task = task
        self.weights = {spec.name: spec.weight for spec in specs}
        params = {spec.name: parse_loss_params(spec) for spec in specs}
        student_names: list[str] = []
        teacher_names: list[str] = []
        for spec in specs:
            s_names, t_names = LOSSES.get(spec.name).hooked_modules(params[spec.name])
            student_names += s_names
            teacher_names += t_names
        self.needs_teacher = any(LOSSES.get(s.name).needs_teacher for s in specs) or bool(teacher_names)
        self.student_hooks = FeatureHooks(student, student_names, role="student")
        self.teacher_hooks = [FeatureHooks(t, teacher_names, role="teacher") for t in teachers]
        for teacher in teachers:
            teacher.eval().requires_grad_(False)

        with torch.no_grad():
            was_training = student.training
            student.eval()
            student(example_input)
            student.train(was_training)
            for teacher in teachers[:1]:
                teacher(example_input)
        ctx = LossContext(
            task=task,
            num_classes=num_classes,
            student_shapes={k: v.shape for k, v in self.student_hooks.features.items()},
            teacher_shapes={k: v.shape for k, v in self.teacher_hooks[0].features.items()}
            if teachers
            else {},
        )
        self.losses = nn.ModuleDict(
            {spec.name: LOSSES.get(spec.name)(params[spec.name], ctx) for spec in specs}
        )
        self.epoch = 0

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        student_out = self.task.output_tensor(self._student[0](images))
        teacher_outs: list[torch.Tensor] = []
        teacher_feats: list[dict[str, torch.Tensor]] = []
        if self.needs_teacher:
            for teacher, hooks in zip(self._teachers, self.teacher_hooks, strict=True):
                with torch.inference_mode():
                    out = self.task.output_tensor(teacher(images))
                # inference tensors cannot be saved for backward: clone them out of inference mode
                teacher_outs.append(out.clone())
                teacher_feats.append({k: v.clone() for k, v in hooks.features.items()})
        batch = DistillBatch(
            student=student_out,
            teachers=teacher_outs,
            targets=targets,
            student_features=dict(self.student_hooks.features),
            teacher_features=teacher_feats,
            epoch=self.epoch,
        )
        total = student_out.new_zeros(())
        terms: dict[str, float] = {}
        for name, loss_fn in self.losses.items():
            value = loss_fn(batch) * self.weights[name]
            terms[name] = float(value.detach())
            total = total + value
        return total, terms

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def close(self) -> None:
        self.student_hooks.remove()
        for hooks in self.teacher_hooks:
            hooks.remove()
