"""Compose the recipe's weighted losses into one training objective over student and teacher(s).

The objective owns the feature hooks and the loss modules (with their adaptors), runs the frozen teachers in
``eval`` + ``inference_mode`` (or reads their outputs from a per-sample cache when training is not augmented,
see :mod:`edgekd.distill.teacher_cache`), and reports each weighted term separately so the history shows what
drove training.

Precision: under mixed precision (``distill.precision: bf16 | fp16``) the student and teacher forward passes run
in autocast, and every loss sees its inputs cast to float32 with autocast off (:func:`full_precision`): softmax,
log-softmax and KL at 16 bits lose the small probabilities KD transfers. The cast is done here once, so no
loss has to remember it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from edgekd.data.base import TensorLoader
from edgekd.distill.hooks import FeatureHooks
from edgekd.distill.losses import LOSSES
from edgekd.distill.losses.base import DistillBatch, LossContext
from edgekd.distill.params import parse_loss_params
from edgekd.distill.teacher_cache import TeacherCache, build_teacher_cache
from edgekd.distill.teacher_inference import inference_copy
from edgekd.recipe.schema import LossSpec
from edgekd.tasks.base import Task


class DistillObjective(nn.Module):
    """``objective(images, targets, indices=None) -> (loss, {term: value})`` for :func:`~edgekd.engine.trainer.fit`.

    Only the loss modules are submodules (their adaptors train with the student); the student and teachers
    are held by reference so that the student's weights are not duplicated in the objective's state dict.
    After :meth:`cache_teacher`, batches given with their sample ``indices`` read the teachers' outputs from
    the cache instead of running the teachers.
    """

    uses_sample_indices = True  # fit() passes each batch's positions in the training split

    def __init__(
        self,
        student: nn.Module,
        teachers: list[nn.Module],
        specs: list[LossSpec],
        task: Task,
        num_classes: int,
        example_input: torch.Tensor,
        fuse_teachers: bool = False,
    ) -> None:
        super().__init__()
        self._student = [student]
        self._student_forward = [student]  # what training calls: the student, or its compiled wrapper
        self.device = example_input.device  # where the student and teachers sit (the training device)
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
        self.teacher_cache: TeacherCache | None = None
        # what runs each teacher's forward: a BN-folded channels_last copy when nothing of it is hooked
        self._runners = list(teachers)
        if fuse_teachers and self.needs_teacher and not teacher_names:
            for i, teacher in enumerate(teachers):
                fast = inference_copy(teacher, example_input, task.output_tensor, name=f"teacher {i}")
                self._runners[i] = fast if fast is not None else teacher

    def teacher_forward(
        self, images: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """Every teacher's output and hooked features on ``images`` (eval mode, ``inference_mode``)."""
        teacher_outs: list[torch.Tensor] = []
        teacher_feats: list[dict[str, torch.Tensor]] = []
        for runner, hooks in zip(self._runners, self.teacher_hooks, strict=True):
            with torch.inference_mode():
                out = self.task.output_tensor(runner(images))
            # inference tensors cannot be saved for backward: clone them out of inference mode
            teacher_outs.append(out.clone())
            teacher_feats.append({k: v.clone() for k, v in hooks.features.items()})
        return teacher_outs, teacher_feats

    def cache_teacher(self, loader: TensorLoader, budget_bytes: int) -> bool:
        """Compute the teachers' outputs on every sample of ``loader``'s split once, for all later epochs.

        Only valid when training sees the same images every epoch (no augmentation): ``loader`` must not
        augment, and steps must pass ``indices``. Returns whether the outputs fit ``budget_bytes`` and were
        cached (otherwise the teachers keep running every step).
        """
        if loader.augment:
            raise ValueError("teacher outputs can only be cached for un-augmented training images")
        self.teacher_cache = None
        if self.needs_teacher:
            batches = ((b.images.to(self.device), b.indices) for b in loader.indexed())
            self.teacher_cache = build_teacher_cache(
                self.teacher_forward, batches, len(loader.split), budget_bytes, self.device
            )
        return self.teacher_cache is not None

    def forward(
        self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted loss terms for one batch; ``indices`` (positions in the training split) enable the cache."""
        student_out = self.task.output_tensor(self._student_forward[0](images))
        teacher_outs: list[torch.Tensor] = []
        teacher_feats: list[dict[str, torch.Tensor]] = []
        if self.needs_teacher:
            if self.teacher_cache is not None and indices is not None:
                teacher_outs, teacher_feats = self.teacher_cache.lookup(indices)
            else:
                teacher_outs, teacher_feats = self.teacher_forward(images)
        with full_precision(student_out.device):
            batch = DistillBatch(
                student=student_out.float(),
                teachers=[t.float() for t in teacher_outs],
                targets=targets,
                student_features={k: v.float() for k, v in self.student_hooks.features.items()},
                teacher_features=[{k: v.float() for k, v in f.items()} for f in teacher_feats],
                epoch=self.epoch,
            )
            total = batch.student.new_zeros(())
            terms: dict[str, float] = {}
            for name, loss_fn in self.losses.items():
                value = loss_fn(batch) * self.weights[name]
                terms[name] = float(value.detach())
                total = total + value
        return total, terms

    def compile_student(self) -> None:
        """Train through ``torch.compile(student)`` (same weights; evaluation and export use the plain module).

        Why only the training forward: the compiled wrapper shares the student's parameters, so the student
        itself stays an ordinary module for evaluation, ``student.pt`` and ONNX export.
        """
        self._student_forward = [torch.compile(self._student[0])]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def close(self) -> None:
        self.student_hooks.remove()
        for hooks in self.teacher_hooks:
            hooks.remove()


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Autocast off for the block: the losses run in float32 whatever precision the forward passes used."""
    with torch.autocast(device.type, enabled=False):
        yield
