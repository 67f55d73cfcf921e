"""Distillation: recover the pruned student's accuracy with the frozen, unpruned teacher(s) as the teacher.

``train_student()`` trains a student with the recipe's weighted losses (see ``edgekd/distill/losses``; each loss
is one registered module, and the README's loss table says what each transfers); ``run()`` is the pipeline stage
around it.
"""

from edgekd.distill.data_free import SYNTHESIZERS, build_synthetic_batches, check_data_free
from edgekd.distill.losses import LOSSES
from edgekd.distill.losses.base import DistillBatch, DistillLoss, LossContext, LossParams
from edgekd.distill.objective import DistillObjective
from edgekd.distill.params import parse_loss_params, validate_loss_params
from edgekd.distill.stage import STAGE, run, train_student

__all__ = [
    "LOSSES",
    "SYNTHESIZERS",
    "STAGE",
    "build_synthetic_batches",
    "check_data_free",
    "DistillBatch",
    "DistillLoss",
    "DistillObjective",
    "LossContext",
    "LossParams",
    "parse_loss_params",
    "run",
    "train_student",
    "validate_loss_params",
]
