"""DeepInversion (Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion", CVPR 2020).

Input batches are optimised directly (no generator) so that every BatchNorm layer of the teacher sees the
running mean and variance it stored from the real data, with a cross-entropy towards random target classes
(class-conditional) and image priors (total variation, L2). Adaptive DeepInversion (ADI) adds a competition
term that pushes the images to where student and teacher disagree (Jensen–Shannon divergence), weight ``adi``.

Each batch starts from noise and gets ``iterations`` Adam steps (lr ``input_lr``); a fresh batch is made every
``every`` student steps, which train on the memory bank in between (the paper synthesises offline: 2k steps
per batch on ImageNet). On 28×28 Fashion-MNIST, 100 steps per batch took a −50%-MACs student from 83.3%
to 89.3% validation accuracy against 20 steps, at the same 100 student updates (benchmarks/RESULTS.md,
issue 16): the synthetic images' quality, not the student's update count, bounds data-free recovery here.
Without a class head set ``ce: 0`` (BN matching and priors only); ``ce > 0`` or ``adi > 0`` needs task
``classification``.

Defaults: ``iterations: 100, every: 4, input_lr: 0.1, bn: 1.0, ce: 1.0, tv: 0.1, l2: 0.001, adi: 0.0``.

Recipe::

    distill:
      data_free: {method: deepinversion, steps_per_epoch: 100, memory_bank: 2048, iterations: 100, every: 4}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from edgekd.distill.data_free import SYNTHESIZERS
from edgekd.distill.data_free.base import (
    BNStatistics,
    SynthContext,
    Synthesizer,
    SynthParams,
    evaluating,
    output,
    total_variation,
)


class DeepInversionParams(SynthParams):
    iterations: int = Field(100, ge=1, description="Adam steps per synthesised batch.")
    every: int = Field(4, ge=1, description="Student steps per synthesised batch.")
    input_lr: float = Field(0.1, gt=0)
    bn: float = Field(1.0, ge=0, description="BatchNorm-statistics matching weight.")
    ce: float = Field(1.0, ge=0, description="Cross-entropy towards random target classes.")
    tv: float = Field(0.1, ge=0, description="Total-variation prior.")
    l2: float = Field(0.001, ge=0, description="L2 prior on the (normalised) pixels.")
    adi: float = Field(0.0, ge=0, description="Adaptive competition (teacher–student JS divergence).")


def js_divergence(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence of the two class distributions, batch mean."""
    p, q = F.softmax(student, 1), F.softmax(teacher, 1)
    m = ((p + q) / 2).clamp_min(1e-8).log()
    return 0.5 * (F.kl_div(m, p, reduction="batchmean") + F.kl_div(m, q, reduction="batchmean"))


@SYNTHESIZERS.register("deepinversion")
class DeepInversion(Synthesizer):
    """Optimise noise inputs against the teacher's BatchNorm statistics, a class target and image priors."""

    Params = DeepInversionParams

    def __init__(self, params: DeepInversionParams, ctx: SynthContext) -> None:
        super().__init__(params, ctx)
        self.bn = BNStatistics(ctx.teacher)

    @classmethod
    def class_conditional(cls, params: DeepInversionParams) -> bool:
        return params.ce > 0 or params.adi > 0

    def synthesize(self, n: int, step: int) -> torch.Tensor | None:
        p, ctx = self.params, self.ctx
        if step % p.every:
            return None
        x = torch.randn(n, *ctx.shape, generator=self.rng).to(self.low.device)
        x = x.clamp_(self.low, self.high).requires_grad_(True)
        targets = torch.randint(ctx.num_classes, (n,), generator=self.rng).to(x.device)
        optimizer = torch.optim.Adam([x], lr=p.input_lr, betas=(0.5, 0.99))
        with evaluating(ctx.student):
            for _ in range(p.iterations):
                with self.bn.recording():
                    logits = output(ctx, ctx.teacher, x)
                loss = p.bn * self.bn.loss() + p.tv * total_variation(x) + p.l2 * x.pow(2).mean()
                if p.ce > 0:
                    loss = loss + p.ce * F.cross_entropy(logits, targets)
                if p.adi > 0:
                    loss = loss - p.adi * js_divergence(output(ctx, ctx.student, x), logits)
                optimizer.zero_grad(set_to_none=True)
                (grad,) = torch.autograd.grad(loss, [x])
                x.grad = grad
                optimizer.step()
                with torch.no_grad():
                    x.clamp_(self.low, self.high)
        return x.detach()
