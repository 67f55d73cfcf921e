"""Synthetic batches as a training-batch source: what :func:`edgekd.engine.trainer.fit` trains on in data-free
mode (``FitOptions.batches``), in place of the training split's loader.

Why a batch source and not a second training loop: the student's step, schedule, evaluation, epoch
checkpoints and resume stay the trainer's, so a data-free run is resumable and deterministic exactly like any
other. The source adds only what synthesis needs: each student step it lets the method spend its budget,
mixes the fresh samples with replayed ones from a memory bank (a ring buffer of past samples), labels the batch
with the teacher's own predictions (the only labels there are; ``ce`` then trains on them), and keeps its whole
state — generator weights and optimisers, the bank, its RNGs, the samples made and the seconds spent — in
:meth:`state_dict` for the trainer's checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from pydantic import ValidationError
from torch import nn

from edgekd.data.base import Batch
from edgekd.distill.data_free.base import SynthContext, Synthesizer
from edgekd.errors import InputError
from edgekd.recipe.data_free import DataFreeConfig
from edgekd.recipe.schema import Recipe
from edgekd.registry import did_you_mean

if TYPE_CHECKING:
    from edgekd.context import RunContext

NO_INDEX = -1  # synthetic samples have no position in any split: a teacher-output cache cannot use them


class SyntheticBatches:
    """``steps_per_epoch`` synthetic batches per epoch, for :func:`~edgekd.engine.trainer.fit`.

    Args:
        synth: the method, built against the teacher and the student being trained.
        batch_size: samples per student step (fresh + replayed).
    """

    def __init__(self, synth: Synthesizer, batch_size: int) -> None:
        self.synth = synth
        self.cfg: DataFreeConfig = synth.ctx.budget
        self.batch_size = batch_size
        self.epoch = 1
        self.rng = torch.Generator().manual_seed(synth.ctx.seed * 1_000_003 + 29)
        self.bank = torch.zeros(self.cfg.memory_bank, *synth.ctx.shape)
        self.filled = 0  # samples the bank holds (it fills up, then the oldest are overwritten)
        self.last = torch.empty(0, *synth.ctx.shape)  # the latest fresh samples (the bank may be off)
        self.position = 0  # next ring-buffer slot
        self.samples = 0
        self.seconds = 0.0

    @property
    def method(self) -> str:
        return self.cfg.method

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.cfg.steps_per_epoch

    def indexed(self) -> Iterator[Batch]:
        """This epoch's batches: ``(images, teacher labels, -1 indices)``; synthesis time is counted apart."""
        student = self.synth.ctx.student
        self._follow_teacher_device()
        if self.cfg.freeze_student_bn:  # fit() just put the student in training mode
            for module in student.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        for i in range(len(self)):
            started = time.perf_counter()
            images = self._batch((self.epoch - 1) * len(self) + i)
            targets = self._labels(images)
            self.seconds += time.perf_counter() - started
            yield Batch(images, targets, torch.full((len(images),), NO_INDEX, dtype=torch.long))

    def _follow_teacher_device(self) -> None:
        """Synthesis runs where the teacher is: the trainer may have placed it on an accelerator."""
        device = next(self.synth.ctx.teacher.parameters()).device
        if self.synth.low.device != device:
            self.synth.to(device)
            self.bank, self.last = self.bank.to(device), self.last.to(device)

    def _batch(self, step: int) -> torch.Tensor:
        n = self.batch_size
        replay = min(round(n * self.cfg.replay), self.filled)
        fresh = self.synth.synthesize(n - replay, step)
        if fresh is None:  # the method makes no samples this step: train on what it made before
            if self.filled:
                return self._draw(n)
            return self.last
        self.samples += len(fresh)
        self.last = fresh
        self._remember(fresh)
        return torch.cat([fresh, self._draw(replay)]) if replay else fresh

    def _labels(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's predictions: class indices (per pixel for segmentation) or regression values."""
        ctx = self.synth.ctx
        with torch.no_grad():
            out = ctx.task.output_tensor(ctx.teacher(images))
        return out if ctx.task.name == "regression" else out.argmax(1)

    def _remember(self, fresh: torch.Tensor) -> None:
        capacity = self.cfg.memory_bank
        if not capacity:
            return
        fresh = fresh[-capacity:]
        slots = (self.position + torch.arange(len(fresh))) % capacity
        self.bank[slots] = fresh
        self.position = int((self.position + len(fresh)) % capacity)
        self.filled = min(capacity, self.filled + len(fresh))

    def _draw(self, k: int) -> torch.Tensor:
        return self.bank[torch.randint(self.filled, (k,), generator=self.rng)]

    def preview(self, n: int = 64) -> torch.Tensor:
        """Up to ``n`` synthetic images (normalised), the most recent first: for the report's sample grid."""
        if not self.filled:
            return self.last[:n]
        recent = (self.position - 1 - torch.arange(min(n, self.filled))) % self.cfg.memory_bank
        return self.bank[recent]

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to draw the same batches as an uninterrupted one."""
        return {
            "synth": self.synth.state_dict(),
            "synth_extra": self.synth.extra_state(),
            "rng": self.rng.get_state(),
            "bank": self.bank[: self.filled].clone(),
            "last": self.last.clone(),
            "position": self.position,
            "samples": self.samples,
            "seconds": self.seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.synth.load_state_dict(state["synth"])
        self.synth.load_extra_state(state["synth_extra"])
        self.rng.set_state(state["rng"])
        self.filled = len(state["bank"])
        self.bank[: self.filled] = state["bank"]
        self.last = state["last"].clone()
        self.position, self.samples, self.seconds = state["position"], state["samples"], state["seconds"]

    def close(self) -> None:
        """Remove the method's hooks from the teacher (it outlives this source)."""
        self.synth.close()


def build_synthetic_batches(ctx: RunContext, student: nn.Module) -> SyntheticBatches:
    """The batch source of ``ctx.recipe.distill.data_free`` against ``ctx.teacher`` and ``student``.

    Reads only the input shape of the eval split (never a training image) and the dataset's preprocessing.
    """
    from edgekd.distill.data_free import SYNTHESIZERS

    cfg = ctx.recipe.distill.data_free
    if cfg is None:
        raise ValueError("the recipe has no distill.data_free section")
    method = SYNTHESIZERS.get(cfg.method)
    teacher = ctx.teacher.eval().requires_grad_(False)
    shape = tuple(int(s) for s in ctx.data.eval.images.shape[1:])
    synth_ctx = SynthContext(
        teacher=teacher,
        student=student,
        task=ctx.task,
        shape=(shape[0], shape[1], shape[2]),
        num_classes=ctx.data.num_classes,
        preprocessing=ctx.data.preprocessing,
        budget=cfg,
        seed=ctx.seed,
    )
    with torch.random.fork_rng():  # the same generator weights whatever ran before (fresh or resumed run)
        torch.manual_seed(ctx.seed)
        synth = method(method.Params(**cfg.params), synth_ctx)
    return SyntheticBatches(synth, cfg.batch_size or ctx.recipe.data.batch_size)


def check_data_free(recipe: Recipe, where: str = "recipe") -> None:
    """Refuse, at recipe load, an unknown method, a bad method option, or a method the task cannot use.

    Raises:
        InputError: one line naming the key, the bad value and what to do instead.
    """
    from edgekd.distill.data_free import SYNTHESIZERS

    cfg = recipe.distill.data_free
    if cfg is None:
        return
    key = f"{where}: distill.data_free"
    if cfg.method not in SYNTHESIZERS:
        valid = ", ".join(SYNTHESIZERS.names())
        hint = did_you_mean(cfg.method, SYNTHESIZERS.names())
        raise InputError(f"{key}.method: unknown data-free method '{cfg.method}'{hint} (valid: {valid})")
    method = SYNTHESIZERS.get(cfg.method)
    try:
        params = method.Params(**cfg.params)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error["loc"])
        raise InputError(f"{key}.{loc}: {error['msg']} (method '{cfg.method}')") from None
    if method.class_conditional(params) and recipe.task != "classification":
        raise InputError(
            f"{key}.method: '{cfg.method}' as configured has class-conditional terms, which need a "
            f"classification head; task '{recipe.task}' has none (use dfad, deepinversion with ce: 0, or "
            "two_generators with confidence: 0)"
        )
