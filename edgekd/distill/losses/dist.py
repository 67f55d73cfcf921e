"""DIST: knowledge distillation from a stronger teacher (Huang, You, Wang, Qian & Xu, NeurIPS 2022,
arXiv:2205.10536).

Exact KL matching is hard for a student much smaller than its teacher. DIST keeps only relations, measured by
Pearson correlation ρ of the softened probabilities ``softmax(z/τ)``:

- **inter-class**: for each sample, ρ between the student's and teacher's class distributions (the ranking of
  classes);
- **intra-class**: for each class, ρ between the student's and teacher's probabilities across the batch (which
  samples belong to the class most).

``DIST = τ² · (β · (1 − mean ρ_inter) + γ · (1 − mean ρ_intra))``. It is 0 when the student's probabilities
are a positive affine map of the teacher's, so it is at its minimum when student equals teacher. The intra-class
relation needs a batch of at least 2. Dense N×C×H×W predictions are treated as N·H·W rows.

Defaults (the authors' code): ``beta: 1``, ``gamma: 1``, ``temperature: 1``.

Recipe::

    distill: {losses: [{name: ce, weight: 1.0}, {name: dist, weight: 1.0, beta: 1.0, gamma: 1.0, temperature: 1.0}]}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses._schedule import ScheduledParams
from edgekd.distill.losses.base import DistillBatch, DistillLoss

EPS = 1e-8


class DISTParams(ScheduledParams):
    beta: float = Field(1.0, ge=0, description="Weight of the inter-class relation.")
    gamma: float = Field(1.0, ge=0, description="Weight of the intra-class relation.")
    temperature: float = Field(1.0, gt=0)


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (shape: rows)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)


def as_rows(logits: torch.Tensor) -> torch.Tensor:
    """N×C, or N×C×… with every position as a row."""
    return logits if logits.ndim == 2 else logits.movedim(1, -1).reshape(-1, logits.shape[1])


@LOSSES.register("dist")
class DIST(DistillLoss):
    """Match the teacher's class rankings per sample and sample rankings per class, not its exact values."""

    Params = DISTParams

    def compute(self, batch: DistillBatch) -> torch.Tensor:
        p: DISTParams = self.params
        y_s = F.softmax(as_rows(batch.student) / p.temperature, dim=1)
        y_t = F.softmax(as_rows(batch.teacher.detach()) / p.temperature, dim=1)
        inter = 1.0 - pearson_rows(y_s, y_t).mean()
        intra = 1.0 - pearson_rows(y_s.t(), y_t.t()).mean()
        return p.temperature**2 * (p.beta * inter + p.gamma * intra)
