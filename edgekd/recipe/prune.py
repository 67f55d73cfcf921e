"""The recipe's ``prune`` section: what to remove, how to rank it, and how to prepare the model for it.

Kept beside :mod:`edgekd.recipe.schema` (which includes it as ``Recipe.prune``): with sparse training and the
progressive schedule it is a concept of its own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgekd.recipe.base import OptimConfig, Section


class SparsityConfig(OptimConfig):
    """``prune.sparsity``: group-sparse training of a copy of the teacher, then pruning by the learned norms.

    DepGraph (Fang et al., CVPR'23, §3.3): a group-level norm penalty, stronger on the groups that already
    matter least, pushes whole coupled channel groups towards zero before they are removed, so pruning takes away
    less of what the network uses (ResNet-56 / CIFAR-10 at 2.13x fewer MACs: 93.77% with the sparse phase,
    93.46% without). edgekd applies torch-pruning's own regulariser (``GroupNormPruner.regularize``) while the
    copy distils from the frozen original teacher with ``distill.losses``, so the copy does not drift from what
    it is meant to keep. ``epochs: 0`` (the default) skips the phase.
    """

    epochs: int = Field(0, ge=0, description="Epochs of sparse training before pruning; 0 turns it off.")
    lr: float = Field(0.01, gt=0)
    reg: float = Field(5e-4, gt=0, description="Group-norm regularisation strength (torch-pruning's `reg`).")
    alpha: float = Field(
        16.0,
        ge=1,
        description="The least important group gets alpha x the regularisation of the most important one.",
    )


class ProgressiveConfig(Section):
    """``prune.progressive`` (with ``prune.schedule: progressive``): prune in steps, distilling between them.

    Why: removing 75-90% of the MACs at once throws away capacity the student could have absorbed from the
    teacher gradually; pruning a share, recovering briefly, and pruning the recovered student again is how heavy
    compression is usually recovered (Zhu & Gupta, "To prune, or not to prune", 2017; NetAdapt, ECCV'18).
    The MACs/params goal is reached after ``steps`` equal shares (equal fractions of what remains); the
    distill section's training then runs on the final student as usual.
    """

    steps: int = Field(
        3, ge=2, le=20, description="Pruning steps; each removes an equal share of what remains."
    )
    epochs: int = Field(
        1,
        ge=0,
        description="Distillation epochs after each step but the last (the distill section follows it).",
    )
    assistant: bool = Field(
        False,
        description="Teacher-assistant chain (Mirzadeh et al., AAAI'20): the previous step's student teaches "
        "the next step instead of the original teacher; the final distillation still uses the teacher.",
    )


class PruneConfig(Section):
    """Structural pruning with torch-pruning's dependency graph.

    ``target`` says what ``reduction`` measures: ``macs`` / ``params`` (fraction of the teacher's removed; the
    pruner steps until the target is met within ``tolerance``) or ``channels`` (torch-pruning's channel pruning
    ratio per group).
    """

    importance: str = Field("group_l2", description="Registered importance criterion.")
    target: Literal["macs", "params", "channels"] = "macs"
    reduction: float = Field(0.74, gt=0, lt=1, description="Fraction removed (of MACs, params or channels).")
    tolerance: float = Field(
        0.01, gt=0, lt=0.5, description="Accepted |achieved - reduction| for macs/params."
    )
    global_pruning: bool = Field(False, description="Rank channels across layers instead of per layer.")
    iterative_steps: int = Field(8, ge=1, le=1000)
    round_to: int | None = Field(
        8,
        ge=1,
        description="Keep channel counts multiples of this (SIMD-friendly); null keeps any count. Default 8: "
        "odd widths made a pruned MobileNetV2 slower than the dense one in ORT (benchmarks/realisation.py).",
    )
    max_layer_ratio: float = Field(0.95, gt=0, le=1, description="No layer loses more than this fraction.")
    ignored_layers: list[str] = Field(default_factory=list, description="Module names never pruned.")
    calibration_batches: int = Field(4, ge=1, description="Batches used by data-driven criteria (Taylor).")
    sparsity: SparsityConfig = Field(
        default_factory=SparsityConfig, description="Group-sparse training before pruning (off by default)."
    )
    schedule: Literal["oneshot", "progressive"] = Field(
        "oneshot", description="oneshot: prune to the goal at once; progressive: in steps with distillation."
    )
    progressive: ProgressiveConfig = Field(default_factory=ProgressiveConfig)

    @model_validator(mode="after")
    def _progressive_needs_a_budget(self) -> PruneConfig:
        if self.schedule == "progressive" and self.target == "channels":
            raise ValueError(
                "schedule: progressive splits a MACs or params budget into steps; use target: macs or params"
            )
        return self
