"""Distillation: recover the pruned student's accuracy with the frozen, unpruned teacher(s) as the teacher.

``run()`` trains the student with the recipe's weighted losses (see ``edgekd/distill/losses``). Each loss is
one registered module; see the README's loss table for what each transfers.
"""

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses.base import DistillBatch, DistillLoss, LossContext, LossParams
from edgekd.distill.objective import DistillObjective
from edgekd.distill.params import parse_loss_params, validate_loss_params
from edgekd.distill.stage import run

__all__ = [
    "LOSSES",
    "DistillBatch",
    "DistillLoss",
    "DistillObjective",
    "LossContext",
    "LossParams",
    "parse_loss_params",
    "run",
    "validate_loss_params",
]
