"""Distillation losses, one module each. Add one: a ``DistillLoss`` subclass with ``@LOSSES.register`` and an
import line below."""

from __future__ import annotations

from edgekd.registry import Registry

LOSSES: Registry = Registry("loss")

from edgekd.distill.losses import (  # noqa: E402,F401  (importing a module registers its loss)
    at,
    boundary_kd,
    ce,
    channel_corr,
    cwd,
    dist,
    dkd,
    fitnet,
    kd,
    kd_corrected,
    multi_teacher,
    pixel_kd,
    reg_kd,
)
