"""Two generators, hard and easy (thesis 004; the memory bank as in Fast-DFKD, Fang et al., AAAI 2022, and
CMI, Fang et al., IJCAI 2021).

G1 (hard) is trained like DFAD's generator: it maximises the student–teacher L1 disagreement, so it finds what
the student has not learnt. G2 (easy) is trained like DeepInversion's inputs and DAFL's one-hot loss: it
matches the teacher's BatchNorm statistics with confident teacher outputs, so it stays near the data the
teacher was trained on. Every student step mixes both (``hard_fraction`` of the fresh samples from G1), and with
``memory_bank`` (the shared key) past samples are replayed, so the student does not chase the hard samples
alone and forget the easy majority. ``use: hard`` or ``use: easy`` keeps one generator: the thesis' ablation.

BN matching works for any teacher with BatchNorm layers; the confidence term needs a class head, so for
segmentation or regression set ``confidence: 0``.

Defaults: ``use: both, hard_fraction: 0.5, bn: 1.0, confidence: 1.0, width: 32``.

Recipe::

    distill:
      data_free: {method: two_generators, steps_per_epoch: 100, memory_bank: 2048, replay: 0.5}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from edgekd.distill.data_free import SYNTHESIZERS
from edgekd.distill.data_free.base import (
    BNStatistics,
    Generator,
    GeneratorParams,
    SynthContext,
    Synthesizer,
    confident,
    disagreement,
    evaluating,
    output,
    update,
)

Loss = Callable[[torch.Tensor], torch.Tensor]


class TwoGeneratorParams(GeneratorParams):
    use: Literal["both", "hard", "easy"] = Field("both", description="Generators in use (ablation: one).")
    hard_fraction: float = Field(0.5, gt=0, lt=1, description="Share of fresh samples from G1 with both.")
    bn: float = Field(1.0, ge=0, description="G2: BatchNorm-statistics matching weight.")
    confidence: float = Field(1.0, ge=0, description="G2: one-hot (confident teacher output) weight.")


@SYNTHESIZERS.register("two_generators")
class TwoGenerators(Synthesizer):
    """G1 hard (teacher–student disagreement) and G2 easy (BN statistics + confident outputs), mixed."""

    Params = TwoGeneratorParams

    def __init__(self, params: TwoGeneratorParams, ctx: SynthContext) -> None:
        super().__init__(params, ctx)
        made = iter(self.make_generators(1 if params.use != "both" else 2, params.width))
        self.hard = next(made) if params.use != "easy" else None
        self.easy = next(made) if params.use != "hard" else None
        self.bn = BNStatistics(ctx.teacher)

    @classmethod
    def class_conditional(cls, params: TwoGeneratorParams) -> bool:
        return params.use != "hard" and params.confidence > 0

    def synthesize(self, n: int, step: int) -> torch.Tensor:
        n_hard = {"hard": n, "easy": 0, "both": round(n * self.params.hard_fraction)}[self.params.use]
        parts = []
        if self.hard is not None:
            parts.append(self._hard_step(self.hard, self.optimizers[0], n_hard))
        if self.easy is not None:
            parts.append(self._easy_step(self.easy, self.optimizers[-1], n - n_hard))
        return torch.cat(parts)

    def hard_loss(self, images: torch.Tensor) -> torch.Tensor:
        """G1 minimises minus the student–teacher disagreement (DFAD)."""
        ctx = self.ctx
        with evaluating(ctx.student):
            return -disagreement(output(ctx, ctx.student, images), output(ctx, ctx.teacher, images))

    def easy_loss(self, images: torch.Tensor) -> torch.Tensor:
        """G2 minimises the BatchNorm-statistics distance plus the teacher's unconfidence."""
        p = self.params
        with self.bn.recording():
            logits = output(self.ctx, self.ctx.teacher, images)
        loss = p.bn * self.bn.loss()
        return loss + p.confidence * confident(logits) if p.confidence > 0 else loss

    def _hard_step(self, gen: Generator, optimizer: torch.optim.Optimizer, n: int) -> torch.Tensor:
        return self._step(gen, optimizer, self.hard_loss, n)

    def _easy_step(self, gen: Generator, optimizer: torch.optim.Optimizer, n: int) -> torch.Tensor:
        return self._step(gen, optimizer, self.easy_loss, n)

    def _step(self, gen: Generator, optimizer: torch.optim.Optimizer, loss: Loss, n: int) -> torch.Tensor:
        params = list(gen.parameters())
        for _ in range(self.ctx.budget.synthesis_steps):
            update(optimizer, loss(gen(self.noise(max(n, 2)))), params)  # BN needs 2 samples
        with torch.no_grad():
            return gen(self.noise(max(n, 2)))[:n]
