"""The training loop shared by teacher training (``edgekd train``) and student distillation.

Why one loop: both need the same optimiser/schedule handling, per-epoch evaluation, best-checkpoint keeping,
resumable epoch checkpoints and progress reporting; they differ only in how a batch's loss is computed, which
the caller passes in as ``compute_loss``.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edgekd.data.base import DataBundle
from edgekd.engine import distributed
from edgekd.engine.evaluate import evaluate_model
from edgekd.engine.sync_batchnorm import sync_batchnorm
from edgekd.errors import EdgekdError, InputError
from edgekd.io import write_with
from edgekd.recipe.schema import OptimConfig
from edgekd.results import EpochLog, TrainResult
from edgekd.tasks.base import Task

log = logging.getLogger("edgekd")

# (images, targets) -> (total loss, {term name: value}) for one batch. A loss whose class sets
# ``uses_sample_indices = True`` is also given ``indices=`` (the batch's positions in the training split), so it
# can look up per-sample values computed once (the distillation objective's cached teacher outputs).
LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class FitOptions:
    """How one training run is set up. ``checkpoint`` enables per-epoch checkpoints and resume."""

    optim: OptimConfig
    batch_size: int
    augment: bool
    seed: int
    desc: str = "train"
    checkpoint: Path | None = None
    resume: bool = False


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


def fit(
    model: nn.Module,
    data: DataBundle,
    task: Task,
    compute_loss: LossFn,
    options: FitOptions,
    extra_modules: nn.Module | None = None,
) -> TrainResult:
    """Train ``model`` (and ``extra_modules``, e.g. feature adaptors) and keep the best-evaluated weights.

    On return ``model`` holds the weights of the best epoch by the task's primary metric (epoch 0 = the weights
    it came in with). With ``options.checkpoint`` set, ``state/…-last.pt`` is rewritten atomically after every
    epoch and ``options.resume`` continues from it.

    Data-parallel (inside :func:`edgekd.engine.distributed.session`): ``options.batch_size`` is the global
    batch, each rank trains on its equal slice of it under DDP (gradients of ``model`` and ``extra_modules``
    averaged, BatchNorm statistics taken over the global batch), so a step is the single-process step up to
    float rounding. Train losses are averaged over ranks; evaluation runs on rank 0 and its metrics are
    broadcast; only rank 0 writes the checkpoint, and a resume loads rank 0's checkpoint on every rank.
    """
    if distributed.requested_world_size() > 1 and not distributed.is_distributed():
        raise InputError(f"{options.desc}: only `edgekd compress` runs distributed (torchrun / --nproc)")
    started = time.perf_counter()
    trainable = list(model.parameters()) + (list(extra_modules.parameters()) if extra_modules else [])
    optimizer = build_optimizer(trainable, options.optim)
    loader = data.train_loader(options.batch_size, augment=options.augment, seed=options.seed)
    if distributed.is_distributed():
        world = distributed.world_size()
        loader.shard(distributed.rank(), world)
        log.info(
            "%s: %d ranks x batch %d (global batch %d)",
            options.desc,
            world,
            options.batch_size // world,
            options.batch_size,
        )
    unsync_batchnorm = sync_batchnorm(model, extra_modules)  # global-batch BN statistics across ranks
    step = distributed.data_parallel(model, extra_modules, compute_loss)
    scheduler = build_scheduler(optimizer, options.optim, len(loader))
    eval_loader = data.eval_loader(512)
    higher = task.higher_is_better
    with_indices = bool(getattr(compute_loss, "uses_sample_indices", False))

    best_metrics = distributed.on_main(lambda: evaluate_model(model, eval_loader, task))
    best_state = copy.deepcopy(model.state_dict())
    best_epoch, history, first_epoch = 0, [], 1
    state = distributed.on_main(lambda: _resume_state(options))
    if state is not None:
        model.load_state_dict(state["model"])
        if extra_modules is not None and state.get("extra") is not None:
            extra_modules.load_state_dict(state["extra"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best_state, best_metrics, best_epoch = state["best_state"], state["best_metrics"], state["best_epoch"]
        history = [EpochLog(**h) for h in state["history"]]
        first_epoch = state["epoch"] + 1
        torch.set_rng_state(state["torch_rng"])
        log.info("%s: resumed after epoch %d", options.desc, state["epoch"])

    for epoch in range(first_epoch, options.optim.epochs + 1):
        epoch_start = time.perf_counter()
        loader.set_epoch(epoch)
        if hasattr(compute_loss, "set_epoch"):
            compute_loss.set_epoch(epoch)  # losses with schedules (e.g. hints first, then logits)
        model.train()
        if extra_modules is not None:
            extra_modules.train()
        sums: dict[str, float] = {}
        total, batches = 0.0, 0
        bar = tqdm(  # disable=None: no bar when stderr is not a terminal (CI logs, redirects)
            loader.indexed(),
            total=len(loader),
            desc=f"{options.desc} {epoch}/{options.optim.epochs}",
            leave=False,
            unit="batch",
            disable=None,
        )
        for images, targets, indices in bar:
            if with_indices:
                loss, terms = step(images, targets, indices=indices)
            else:
                loss, terms = step(images, targets)
            if not torch.isfinite(loss):
                raise EdgekdError(
                    f"{options.desc}: loss became {loss.item()} at epoch {epoch}; lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
            batches += 1
            if batches == 1 and epoch == first_epoch:  # the first step's loss, to compare launches by
                first = distributed.mean_over_ranks({"loss": total})["loss"]
                log.debug("%s: first step loss %.6f (batch %d)", options.desc, first, options.batch_size)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.set_postfix(loss=f"{total / batches:.4f}")
        metrics = distributed.on_main(lambda: evaluate_model(model, eval_loader, task))
        means = distributed.mean_over_ranks({"": total, **sums})  # every rank ran the same number of batches
        entry = EpochLog(
            epoch=epoch,
            train_loss=means.pop("") / max(1, batches),
            loss_terms={k: v / max(1, batches) for k, v in means.items()},
            metrics=metrics,
            lr=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - epoch_start,
        )
        history.append(entry)
        primary = metrics[task.primary_metric]
        best = best_metrics[task.primary_metric]
        if (primary > best) if higher else (primary < best):
            best_metrics, best_state, best_epoch = metrics, copy.deepcopy(model.state_dict()), epoch
        log.info(
            "%s epoch %d: loss %.4f %s %.4f (best %.4f @ %d) %.1fs",
            options.desc,
            epoch,
            entry.train_loss,
            task.primary_metric,
            primary,
            best_metrics[task.primary_metric],
            best_epoch,
            entry.seconds,
        )
        if options.checkpoint is not None and distributed.is_main():
            _save_checkpoint(
                options.checkpoint,
                model,
                extra_modules,
                optimizer,
                scheduler,
                epoch,
                best_state,
                best_metrics,
                best_epoch,
                history,
            )

    unsync_batchnorm()
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        epochs=options.optim.epochs,
        best_epoch=best_epoch,
        metrics=best_metrics,
        history=tuple(history),
        seconds=time.perf_counter() - started,
    )


def _resume_state(options: FitOptions) -> dict | None:
    """The epoch checkpoint to continue from, if ``options`` asks to resume and it exists."""
    if options.resume and options.checkpoint is not None and options.checkpoint.is_file():
        from edgekd.models.checkpoint import load_checkpoint  # weights_only, one-line errors for bad files

        try:
            return load_checkpoint(options.checkpoint)
        except InputError as exc:
            raise InputError(f"{exc}; delete it or run without --resume to start over") from None
    return None


def _save_checkpoint(
    path: Path,
    model: nn.Module,
    extra: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    best_state: dict,
    best_metrics: dict,
    best_epoch: int,
    history: list[EpochLog],
) -> None:
    from edgekd.results import to_dict

    state = {
        "model": model.state_dict(),
        "extra": extra.state_dict() if extra is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "best_state": best_state,
        "best_metrics": best_metrics,
        "best_epoch": best_epoch,
        "history": [to_dict(h) for h in history],
        "torch_rng": torch.get_rng_state(),
    }
    write_with(path, lambda tmp: torch.save(state, tmp))
