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
    reg: float | Literal["auto"] = Field(
        "auto",
        description="Group-norm regularisation strength (torch-pruning's `reg`), or auto: sized to the phase's "
        "steps and learning rates so that the penalty alone would leave the least important group shrink_to of "
        "its norm (SGD only). DepGraph's 5e-4 is sized for phases of hundreds of epochs.",
    )
    shrink_to: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="With reg: auto, the share of its norm the least important group would keep at the end of "
        "the phase under the penalty alone (the task loss pulls back against it).",
    )
    alpha: float = Field(
        16.0,
        ge=1,
        description="With target: all, the least important group gets alpha x the regularisation of the most "
        "important one.",
    )
    target: Literal["all", "pruned"] = Field(
        "all",
        description="What the penalty works on. all: every channel group, weakest fastest (DepGraph; "
        "torch-pruning's GroupNormPruner). pruned: only the channels a prune to the recipe's goal would remove "
        "now, planned before the phase (growing regularisation, Wang et al. ICLR'21), so what they carry moves "
        "into the kept channels before the cut.",
    )

    @model_validator(mode="after")
    def _auto_reg_needs_sgd(self) -> SparsityConfig:
        if self.reg == "auto" and self.optimizer != "sgd":
            raise ValueError(
                "reg: auto sizes the penalty for SGD with momentum; with optimizer adamw give reg a number"
            )
        if isinstance(self.reg, float) and not self.reg > 0:
            raise ValueError(f"reg must be > 0 or auto, got {self.reg}")
        return self


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


class LatencyTargetConfig(Section):
    """``prune.latency`` (with ``prune.target: latency``): the device, runtime setting and budget to prune for.

    The budget is ``(1 - prune.reduction)`` of the teacher's p50 on ``target`` at ``threads`` (measured when
    the latency model was calibrated), or ``p50_ms`` when set. The target's latency model
    (:mod:`edgekd.latency`) is calibrated automatically when no valid one is cached (``profile.latency_cache``,
    ``$EDGEKD_LATENCY_CACHE``); channels are then allocated by importance kept per millisecond saved
    (HALP, Shen et al., NeurIPS'22), at widths the model predicts fast on that device.

    Recipe::

        prune: {target: latency, reduction: 0.5, latency: {target: local, threads: 1}}
        prune: {target: latency, latency: {target: pi5, threads: 4, p50_ms: 8.0, refine: true}}

    The student is profiled on ``target`` at ``threads`` (both must be in ``profile.targets`` and
    ``profile.threads``); a miss beyond the model's error is recorded in the model, and ``refine: true``
    re-prunes once against the corrected model (NetAdapt's measure-and-adjust loop, one step).
    """

    target: str = Field(
        "local", description="Profiling target: local, ssh://user@host, or a targets.yaml name."
    )
    threads: int = Field(1, ge=1, description="Intra-op threads the student will run with on the target.")
    p50_ms: float | None = Field(
        None, gt=0, description="Absolute p50 budget in ms; null: (1 - reduction) of the teacher's p50."
    )
    quick: bool = Field(
        False, description="Calibrate with the coarse grid (seconds instead of minutes, larger error)."
    )
    refine: bool = Field(
        False,
        description="When the shipped student misses the budget by more than the latency model's error, "
        "update the model with its measurement and prune, distil, export and profile once more.",
    )


class PruneConfig(Section):
    """Structural pruning with torch-pruning's dependency graph.

    ``target`` says what ``reduction`` measures: ``macs`` / ``params`` (fraction of the teacher's removed; the
    pruner steps until the target is met within ``tolerance``), ``latency`` (fraction of the teacher's p50 on
    ``latency.target``, see :class:`LatencyTargetConfig`) or ``channels`` (torch-pruning's channel pruning
    ratio per group).

    ``allocation`` says how channels are spread over the layers: ``uniform`` (one channel ratio for every
    group, searched until the goal is met: the behaviour the quickstart's numbers were measured with) or
    ``cost`` (per-group widths chosen by importance kept per unit of MACs/params/latency saved, in seconds:
    :mod:`edgekd.prune.allocate`). Null (the default) means ``cost`` for ``latency`` and ``uniform`` otherwise.
    """

    importance: str = Field("group_l2", description="Registered importance criterion.")
    target: Literal["macs", "params", "channels", "latency"] = "macs"
    reduction: float = Field(
        0.74, gt=0, lt=1, description="Fraction removed (of MACs, params, channels or p50 latency)."
    )
    allocation: Literal["uniform", "cost"] | None = Field(
        None,
        description="uniform: one searched channel ratio; cost: per-group widths by importance per cost saved. "
        "Null: cost for target latency, uniform otherwise.",
    )
    latency: LatencyTargetConfig = Field(
        default_factory=LatencyTargetConfig, description="The device and budget of target: latency."
    )
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

    @property
    def resolved_allocation(self) -> str:
        """``allocation`` with its per-target default applied."""
        if self.allocation is not None:
            return self.allocation
        return "cost" if self.target == "latency" else "uniform"

    @model_validator(mode="after")
    def _progressive_needs_a_budget(self) -> PruneConfig:
        if self.schedule == "progressive" and self.target in ("channels", "latency"):
            raise ValueError(
                "schedule: progressive splits a MACs or params budget into steps; use target: macs or params"
            )
        if self.schedule == "progressive" and self.allocation == "cost":
            raise ValueError(
                "schedule: progressive prunes each step with allocation: uniform; drop allocation"
            )
        if self.target == "latency" and self.allocation == "uniform":
            raise ValueError(
                "target: latency needs allocation: cost (or null); uniform cannot aim at a latency"
            )
        if self.target == "channels" and self.allocation == "cost":
            raise ValueError(
                "target: channels is a per-group ratio; allocation: cost needs macs, params or latency"
            )
        if self.sparsity.target == "pruned" and self.resolved_allocation == "cost":
            raise ValueError(
                "sparsity.target: pruned plans its cut with allocation: uniform; set it, or use target: all"
            )
        return self
