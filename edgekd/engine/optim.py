"""Optimiser, LR schedule and seeding: how every edgekd training run (teacher, sparse, student) is set up.

Kept apart from the training loop (:mod:`edgekd.engine.trainer`) so that benchmarks and hand-written loops can
build exactly the optimiser a recipe describes without the loop around it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from edgekd.recipe.schema import OptimConfig


def seed_everything(seed: int) -> None:
    """Seed every RNG edgekd uses; CPU results are then repeatable run to run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step LR multiplier: linear warm-up, then cosine / constant; or PyTorch's OneCycle."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
