"""Distillation losses, one module each. Add one: a ``DistillLoss`` subclass with ``@LOSSES.register`` and an
import line below."""

from __future__ import annotations

from edgekd.registry import Registry

LOSSES: Registry = Registry("loss")

from edgekd.distill.losses import ce, kd  # noqa: E402,F401  (registers)
