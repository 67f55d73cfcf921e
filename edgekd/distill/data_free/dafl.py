"""DAFL (Chen et al., "Data-Free Learning of Student Networks", ICCV 2019).

A generator is trained against the fixed teacher alone, so that its images look like the teacher's training
data to the teacher: confident predictions (one-hot loss: cross-entropy with the teacher's own argmax), large
activations before the classifier (activation loss: minus their mean L1 norm), and all classes equally often
over a batch (information-entropy loss: minus the entropy of the batch-mean class distribution). All three
need a class head: task ``classification`` only.

Defaults (the paper's MNIST weights): ``one_hot: 1.0, activation: 0.1, entropy: 5.0``, ``width: 32``.

Recipe::

    distill:
      data_free: {method: dafl, steps_per_epoch: 100, generator_lr: 0.001, entropy: 5.0}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgekd.distill.data_free import SYNTHESIZERS
from edgekd.distill.data_free.base import (
    GeneratorParams,
    SynthContext,
    Synthesizer,
    confident,
    output,
    update,
)


class DAFLParams(GeneratorParams):
    one_hot: float = Field(1.0, ge=0)
    activation: float = Field(0.1, ge=0)
    entropy: float = Field(5.0, ge=0)


@SYNTHESIZERS.register("dafl")
class DAFL(Synthesizer):
    """A generator trained for confident, high-activation, class-balanced teacher outputs."""

    Params = DAFLParams

    def __init__(self, params: DAFLParams, ctx: SynthContext) -> None:
        super().__init__(params, ctx)
        (self.generator,) = self.make_generators(1, params.width)
        self._features: list[torch.Tensor] = []
        linears = [m for m in ctx.teacher.modules() if isinstance(m, nn.Linear)]
        self._hook = linears[-1].register_forward_pre_hook(self._keep) if linears else None

    @classmethod
    def class_conditional(cls, params: DAFLParams) -> bool:
        return True

    def close(self) -> None:
        super().close()
        if self._hook is not None:
            self._hook.remove()

    def _keep(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._features = [inputs[0]]

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """What the generator minimises on ``images``: one-hot − activation − information entropy."""
        p = self.params
        self._features = []
        logits = output(self.ctx, self.ctx.teacher, images)
        features = self._features[0] if self._features else logits
        self._features = []
        mean_p = F.softmax(logits, 1).mean(0)
        neg_entropy = (mean_p * mean_p.clamp_min(1e-8).log()).sum()
        return p.one_hot * confident(logits) - p.activation * features.abs().mean() + p.entropy * neg_entropy

    def synthesize(self, n: int, step: int) -> torch.Tensor:
        params = list(self.generator.parameters())
        for _ in range(self.ctx.budget.synthesis_steps):
            update(self.optimizers[0], self.loss(self.generator(self.noise(n))), params)
        with torch.no_grad():
            return self.generator(self.noise(n))
