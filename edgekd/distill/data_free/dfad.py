"""DFAD (Fang et al., "Data-Free Adversarial Distillation", arXiv:1912.11006, 2019).

A generator is trained adversarially: it maximises the L1 disagreement between student and teacher outputs,
so it keeps producing the inputs the student has not learnt yet, while the student minimises the recipe's
distillation losses on them. Nothing in it needs a class head: it applies to classification, segmentation
and regression teachers alike.

Defaults: the shared budget (``synthesis_steps: 1`` generator step per student step, ``generator_lr: 1e-3``,
``latent_dim: 64``); ``width: 32`` generator channels.

Recipe::

    distill:
      data_free: {method: dfad, steps_per_epoch: 100, synthesis_steps: 1, generator_lr: 0.001}
"""

from __future__ import annotations

import torch

from edgekd.distill.data_free import SYNTHESIZERS
from edgekd.distill.data_free.base import (
    GeneratorParams,
    SynthContext,
    Synthesizer,
    disagreement,
    evaluating,
    output,
    update,
)


class DFADParams(GeneratorParams):
    """DFAD takes only the generator's width."""


@SYNTHESIZERS.register("dfad")
class DFAD(Synthesizer):
    """A generator that maximises the student–teacher L1 disagreement."""

    Params = DFADParams

    def __init__(self, params: DFADParams, ctx: SynthContext) -> None:
        super().__init__(params, ctx)
        (self.generator,) = self.make_generators(1, params.width)

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """What the generator minimises on ``images``: minus the student–teacher disagreement."""
        ctx = self.ctx
        with evaluating(ctx.student):
            return -disagreement(output(ctx, ctx.student, images), output(ctx, ctx.teacher, images))

    def synthesize(self, n: int, step: int) -> torch.Tensor:
        params = list(self.generator.parameters())
        for _ in range(self.ctx.budget.synthesis_steps):
            update(self.optimizers[0], self.loss(self.generator(self.noise(n))), params)
        with torch.no_grad():
            return self.generator(self.noise(n))
