"""FitNets hint loss (Romero, Ballas, Kahou, Chassang, Gatta & Bengio, ICLR 2015, arXiv:1412.6550).

The student's *guided* layer is regressed onto the teacher's *hint* layer::

    fitnet = Σ_pairs mean((r(s) − t)²)      (element mean over N×C×H×W, summed over module pairs)

``r`` is an adaptor (1×1 conv + BN) built automatically from the hooked shapes when the channel counts differ,
as they do after pruning. Where they already match, the features are compared directly, so the loss is exactly
0 when student equals teacher. If the spatial sizes differ, the adapted student map is resized bilinearly to
the teacher's. The adaptor trains with the student and is dropped before export.

**Two-stage schedule** (FitNets, and the gaze thesis 001): ``until_epoch: N`` stops the hints after epoch N.
Give the logit loss ``from_epoch: N+1`` so the logits take over::

    distill:
      epochs: 6
      losses:
        - {name: ce, weight: 0.1}
        - {name: fitnet, weight: 1.0, student: layer2, teacher: layer2, until_epoch: 2}
        - {name: kd, weight: 0.9, from_epoch: 3}

Defaults: ``student: layer2``, ``teacher``: the student's names, no window. A list of names hooks several
pairs: ``student: [layer2, layer3]``.

Recipe::

    distill: {losses: [{name: kd, weight: 1.0}, {name: fitnet, weight: 1.0, student: layer2, teacher: layer2}]}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses._features import AdaptedPairLoss, FeaturePairParams, as_map, resize_to
from edgekd.distill.losses.base import DistillBatch, idle


class FitNetParams(FeaturePairParams):
    pass


@LOSSES.register("fitnet")
class FitNet(AdaptedPairLoss):
    """Regress the student's hooked features (through an adaptor) onto the teacher's."""

    Params = FitNetParams

    def compute(self, batch: DistillBatch) -> torch.Tensor:
        total = idle(batch)
        for (s, t), adaptor in zip(self.features(batch), self.adaptors, strict=True):
            t = as_map(t)
            s = resize_to(adaptor(as_map(s)), t.shape[-2:])
            total = total + F.mse_loss(s, t)
        return total
