"""Attention transfer, activation-based (Zagoruyko & Komodakis, ICLR 2017, arXiv:1612.03928).

A feature map's spatial attention is ``Q = mean_c |A_c|^p`` (an H×W map), flattened and L2-normalised per
sample. The student matches the teacher's attention at each hooked pair::

    at = Σ_pairs mean_{n, hw}((Q_s/‖Q_s‖ − Q_t/‖Q_t‖)²)

This is the authors' ``at_loss``, mean over batch and positions. Channels are averaged away, so a pruned student
needs no adaptor. If spatial sizes differ, the student's map is resized bilinearly to the teacher's before
normalising. The authors' code weights the sum by ``β/2`` with ``β = 1000``, so use ``weight: 500`` for their
balance against a unit-weight logit loss.

Defaults: ``p: 2``, ``student: [layer1, layer2, layer3]`` (every stage, as in the paper), ``teacher``: the
student's names.

Recipe::

    distill: {losses: [{name: kd, weight: 1.0}, {name: at, weight: 500, p: 2, student: [layer1, layer2, layer3]}]}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses._features import FeaturePairLoss, FeaturePairParams, Names, as_map, resize_to
from edgekd.distill.losses.base import DistillBatch, idle


class ATParams(FeaturePairParams):
    student: Names = Field(["layer1", "layer2", "layer3"], description="Student module name(s).")
    p: float = Field(2.0, ge=1, description="Exponent of |activation| in the attention map (≥ 1).")


def attention(features: torch.Tensor, p: float, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """N×(H·W) L2-normalised attention ``mean_c |A_c|^p``, at spatial ``size``."""
    q = as_map(features).abs().pow(p).mean(dim=1, keepdim=True)
    return F.normalize(resize_to(q, size).flatten(1), dim=1)


@LOSSES.register("at")
class AttentionTransfer(FeaturePairLoss):
    """Match where the teacher's features are active, not the features themselves."""

    Params = ATParams

    def compute(self, batch: DistillBatch) -> torch.Tensor:
        p: ATParams = self.params
        total = idle(batch)
        for s, t in self.features(batch):
            size = as_map(t).shape[-2:]
            q_s = attention(s, p.p, size)
            q_t = attention(t, p.p, size)
            total = total + (q_s - q_t).pow(2).mean()
        return total
