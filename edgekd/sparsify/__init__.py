"""Sparse training before pruning (``prune.sparsity``): DepGraph's group-norm regularisation, as a stage."""

from edgekd.sparsify.regularizer import GroupRegularizer, near_zero_share
from edgekd.sparsify.stage import STAGE, run, sparse_training_context

__all__ = ["STAGE", "GroupRegularizer", "near_zero_share", "run", "sparse_training_context"]
