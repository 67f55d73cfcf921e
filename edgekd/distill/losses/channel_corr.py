"""Channel-correlation-based selective KD, CCSKD (thesis 003; after Gou, Xiong, Yu, Zhan & Yi, IEEE TCDS 2022,
doi:10.1109/TCDS.2022.3232569).

Three terms, on per-sample *channel descriptors* ``d`` (the spatial mean of a hooked map, N×C; the student's go
through a 1×1 conv + BN adaptor when its channel count differs from the teacher's, as after pruning):

- **channel**: ``mean((d_s − d_t)²)``, what each channel says about each sample;
- **relation**: the C×C inter-sample channel-correlation matrix ``R = Ẑᵀ Ẑ``, where ``Ẑ`` holds ``d``'s
  columns centred over the batch and scaled to unit norm. So ``R_ij`` is the Pearson correlation of channels
  i and j across the batch's samples: which channels rise and fall together from sample to sample.
  ``mean((R_s − R_t)²)``. It needs a batch of at least 2.
- **selective logit term**: per-sample ``T² · KL(teacher ‖ student)`` with weight 1 where the teacher's top-1
  is right and ``wrong_decay ** (epoch // decay_every)`` where it is wrong, batch-mean. Supervision on the
  teacher's mistakes fades over training instead of being cut at once. Early on the wrong teacher still carries
  similarity information; later it would pin the student to the error.

``channel_corr = channel_weight · Σ_pairs channel + relation_weight · Σ_pairs relation + logit_weight · selective``

How this differs from the authors' code: there, the relation part is RKD distance/angle on the descriptors, and
the selective term weights correct samples 2 and wrong ones 1, both decaying by 0.9 every 30 epochs. Here the
relation is the channel-correlation matrix the thesis describes, and only the wrong samples decay, on a scale of
epochs that suits few-epoch recovery runs. Outside training (epoch 0) the wrong-sample weight is 1.

Defaults: ``student: layer3``, ``channel_weight: 1``, ``relation_weight: 1``, ``logit_weight: 1``,
``temperature: 4``, ``wrong_decay: 0.5``, ``decay_every: 1``.

Recipe::

    distill: {losses: [{name: ce, weight: 0.5}, {name: channel_corr, weight: 0.5, student: layer3,
                        teacher: layer3, wrong_decay: 0.5}]}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses._features import AdaptedPairLoss, FeaturePairParams, Names, as_map
from edgekd.distill.losses._logits import kl_rows, require_class_logits
from edgekd.distill.losses.base import DistillBatch, idle


class ChannelCorrParams(FeaturePairParams):
    student: Names = Field("layer3", description="Student module name(s), as in named_modules().")
    channel_weight: float = Field(1.0, ge=0, description="Weight of the per-sample channel term.")
    relation_weight: float = Field(1.0, ge=0, description="Weight of the channel-correlation term.")
    logit_weight: float = Field(1.0, ge=0, description="Weight of the selective logit term.")
    temperature: float = Field(4.0, gt=0)
    wrong_decay: float = Field(
        0.5, ge=0, le=1, description="Per-step decay of wrong-teacher samples' weight."
    )
    decay_every: int = Field(1, ge=1, description="Epochs per decay step.")


def descriptors(features: torch.Tensor) -> torch.Tensor:
    """N×C spatial means of a hooked map (N×C features unchanged)."""
    return as_map(features).mean(dim=(2, 3))


def channel_correlation(d: torch.Tensor) -> torch.Tensor:
    """C×C Pearson correlation of the columns of the N×C descriptors ``d``, across the batch."""
    z = F.normalize(d - d.mean(dim=0, keepdim=True), dim=0)
    return z.t() @ z


def selective_weights(
    teacher: torch.Tensor, target: torch.Tensor, epoch: int, decay: float, every: int
) -> torch.Tensor:
    """Per-sample weights: 1 where the teacher is right, ``decay ** (epoch // every)`` where it is wrong."""
    wrong_weight = decay ** (epoch // every)
    wrong = teacher.argmax(dim=1) != target
    return torch.where(wrong, torch.full_like(teacher[:, 0], wrong_weight), torch.ones_like(teacher[:, 0]))


@LOSSES.register("channel_corr")
class ChannelCorrelationKD(AdaptedPairLoss):
    """Channel descriptors and their inter-sample correlations, plus KD that fades out the teacher's mistakes."""

    Params = ChannelCorrParams

    def compute(self, batch: DistillBatch) -> torch.Tensor:
        p: ChannelCorrParams = self.params
        require_class_logits("channel_corr", batch)
        total = idle(batch)
        for (s, t), adaptor in zip(self.features(batch), self.adaptors, strict=True):
            d_t = descriptors(t)
            d_s = descriptors(adaptor(as_map(descriptors(s))))
            total = total + p.channel_weight * F.mse_loss(d_s, d_t)
            total = total + p.relation_weight * F.mse_loss(channel_correlation(d_s), channel_correlation(d_t))
        if p.logit_weight > 0:
            t = batch.teacher.detach()
            weights = selective_weights(t, batch.targets, batch.epoch, p.wrong_decay, p.decay_every)
            total = total + p.logit_weight * (weights * kl_rows(batch.student, t, p.temperature)).mean()
        return total
