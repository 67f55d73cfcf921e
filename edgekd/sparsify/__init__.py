"""Sparse training before pruning (``prune.sparsity``): DepGraph's group-norm regularisation, as a stage."""

from edgekd.sparsify.regularizer import GroupRegularizer, PlannedRegularizer, near_zero_share, sized_reg
from edgekd.sparsify.stage import STAGE, run, sparse_training_context

__all__ = [
    "STAGE",
    "GroupRegularizer",
    "PlannedRegularizer",
    "near_zero_share",
    "run",
    "sized_reg",
    "sparse_training_context",
]
