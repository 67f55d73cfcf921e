"""The training loop shared by teacher training (``edgekd train``) and student distillation.

Why one loop: both need the same optimiser/schedule handling, per-epoch evaluation, best-checkpoint keeping,
resumable epoch checkpoints and progress reporting; they differ only in how a batch's loss is computed, which
the caller passes in as ``compute_loss``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from tqdm import tqdm

from edgekd.data.base import Batch, DataBundle, TensorLoader
from edgekd.engine import distributed
from edgekd.engine.device import TrainDevice, to_cpu
from edgekd.engine.evaluate import evaluate_model
from edgekd.engine.optim import build_optimizer, build_scheduler, seed_everything
from edgekd.engine.sync_batchnorm import sync_batchnorm
from edgekd.errors import EdgekdError, InputError
from edgekd.io import write_with
from edgekd.recipe.schema import OptimConfig
from edgekd.results import EpochLog, TrainResult
from edgekd.tasks.base import Task

log = logging.getLogger("edgekd")

__all__ = [
    "BatchSource",
    "FitOptions",
    "LossFn",
    "build_optimizer",
    "build_scheduler",
    "fit",
    "seed_everything",
]

# (images, targets) -> (total loss, {term name: value}) for one batch. A loss whose class sets
# ``uses_sample_indices = True`` is also given ``indices=`` (the batch's positions in the training split), so it
# can look up per-sample values computed once (the distillation objective's cached teacher outputs).
LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


class BatchSource(Protocol):
    """Training batches from somewhere other than the training split (``FitOptions.batches``).

    Why a protocol: data-free distillation synthesises its batches from the teacher and must not touch the
    training split, yet keeps this loop's schedule, evaluation, checkpoints and resume. A source with
    ``state_dict``/``load_state_dict`` has that state saved in, and restored from, the epoch checkpoint.
    """

    def set_epoch(self, epoch: int) -> None: ...

    def __len__(self) -> int: ...

    def indexed(self) -> Iterator[Batch]: ...


@dataclass(frozen=True)
class FitOptions:
    """How one training run is set up. ``checkpoint`` enables per-epoch checkpoints and resume.

    ``eval_batch_size`` only sets how many images one evaluation forward pass takes (memory vs speed); the
    metrics do not depend on it beyond float rounding. Callers pass the recipe's ``data.eval_batch_size``.
    """

    optim: OptimConfig
    batch_size: int
    augment: bool
    seed: int
    desc: str = "train"
    checkpoint: Path | None = None
    resume: bool = False
    eval_batch_size: int = 512
    device: TrainDevice = TrainDevice()  # where and at which precision; fit returns the model on the CPU
    batches: BatchSource | None = None  # train on these instead of data's training split (data-free mode)
    # Called between backward and the optimizer step, on unscaled gradients: gradient-side regularisers such
    # as torch-pruning's group-norm regulariser (sparse training before pruning) add to ``param.grad`` here.
    after_backward: Callable[[], None] | None = None
    # Keep the last epoch whatever validation says: for training whose purpose is a property of the weights, not
    # accuracy (sparse training, where the un-regularised incoming weights would always evaluate best).
    keep_last: bool = False


def fit(
    model: nn.Module,
    data: DataBundle,
    task: Task,
    compute_loss: LossFn,
    options: FitOptions,
    extra_modules: nn.Module | None = None,
) -> TrainResult:
    """Train ``model`` (and ``extra_modules``, e.g. feature adaptors) and keep the best-evaluated weights.

    On return ``model`` holds the weights of the best epoch by the task's primary metric on the validation split
    (epoch 0 = the weights it came in with; the last epoch when there is no validation split). The eval (test)
    split is never looked at here: it is evaluated once per artifact, after training. With ``options.checkpoint``
    set, ``state/…-last.pt`` is rewritten atomically after every epoch and ``options.resume`` continues from it.

    Data-parallel (inside :func:`edgekd.engine.distributed.session`): ``options.batch_size`` is the global
    batch, each rank trains on its equal slice of it under DDP (gradients of ``model`` and ``extra_modules``
    averaged, BatchNorm statistics taken over the global batch), so a step is the single-process step up to
    float rounding. Train losses are averaged over ranks; evaluation runs on rank 0 and its metrics are
    broadcast; only rank 0 writes the checkpoint, and a resume loads rank 0's checkpoint on every rank.
    """
    if distributed.requested_world_size() > 1 and not distributed.is_distributed():
        raise InputError(f"{options.desc}: only `edgekd compress` runs distributed (torchrun / --nproc)")
    started = time.perf_counter()
    options.device.place(model, extra_modules)  # before the optimizer and DDP take the parameters
    trainable = list(model.parameters()) + (list(extra_modules.parameters()) if extra_modules else [])
    optimizer = build_optimizer(trainable, options.optim)
    loader = _train_loader(data, options)
    unsync_batchnorm = sync_batchnorm(model, extra_modules)  # global-batch BN statistics across ranks
    run = _Training(
        model=model,
        extra=extra_modules,
        task=task,
        options=options,
        compute_loss=compute_loss,
        step=distributed.data_parallel(model, extra_modules, compute_loss),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, options.optim, len(loader)),
        loader=loader,
        scaler=options.device.grad_scaler(),
        val_loader=data.val_loader(options.eval_batch_size),
    )
    if run.val_loader is None:
        log.info("%s: no validation split (data.val: 0): the last epoch is kept", options.desc)

    progress = _resume(run) or _Progress.start(model, run.evaluate())
    first_epoch = progress.epoch + 1
    for epoch in range(first_epoch, options.optim.epochs + 1):
        entry = _run_epoch(run, epoch, log_first_step=epoch == first_epoch)
        progress = progress.after(entry, model, task, keep_last=options.keep_last)
        _log_epoch(run, entry, progress)
        if options.checkpoint is not None and distributed.is_main():
            _save_checkpoint(options.checkpoint, run, progress)

    unsync_batchnorm()
    to_cpu(model, extra_modules)  # pruning, export and ORT evaluation run on the CPU
    model.load_state_dict(progress.best_state)
    model.eval()
    return TrainResult(
        epochs=options.optim.epochs,
        best_epoch=progress.best_epoch,
        metrics=progress.best_metrics,
        history=progress.history,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class _Training:
    """What one :func:`fit` call drives, built once: the pieces every epoch, evaluation and checkpoint use.

    Why a bundle: the epoch loop, the resume and the checkpoint each need most of these, and passing them one
    by one made ten-parameter functions.
    """

    model: nn.Module
    extra: nn.Module | None
    task: Task
    options: FitOptions
    compute_loss: LossFn
    step: Callable[..., tuple[torch.Tensor, dict[str, float]]]  # compute_loss, under DDP when distributed
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: TensorLoader | BatchSource
    scaler: torch.amp.GradScaler  # fp16 loss scaling; a pass-through at fp32 and bf16
    val_loader: TensorLoader | None  # what epochs are selected on; never the eval (test) split

    def evaluate(self) -> dict[str, float]:
        """The model's metrics on the validation split (``{}`` without one): computed on rank 0, on every rank."""
        if self.val_loader is None:
            return {}
        loader = self.val_loader
        return distributed.on_main(lambda: evaluate_model(self.model, loader, self.task))

    def train_mode(self) -> None:
        """Model and loss modules in training mode (BatchNorm statistics, dropout): they may come in eval mode."""
        self.model.train()
        if self.extra is not None:
            self.extra.train()


@dataclass(frozen=True)
class _Progress:
    """Where training stands after ``epoch`` finished epochs: the best weights so far and the epoch logs.

    This is what an epoch checkpoint saves besides the model/optimizer/scheduler states, so a resumed run
    continues with the same best-so-far decision as an uninterrupted one.
    """

    epoch: int
    best_epoch: int
    best_metrics: dict[str, float]
    best_state: dict[str, torch.Tensor]
    history: tuple[EpochLog, ...] = ()

    @classmethod
    def start(cls, model: nn.Module, metrics: dict[str, float]) -> _Progress:
        """Before the first epoch: the incoming weights are epoch 0's, and the best until beaten."""
        return cls(epoch=0, best_epoch=0, best_metrics=metrics, best_state=copy.deepcopy(model.state_dict()))

    def after(self, entry: EpochLog, model: nn.Module, task: Task, keep_last: bool = False) -> _Progress:
        """This progress advanced by one epoch; ``model``'s weights become the best if they beat the best.

        Without validation metrics (``data.val: 0``) nothing can be compared, and with ``keep_last`` nothing is:
        the latest epoch is kept.
        """
        history = (*self.history, entry)
        metric = task.primary_metric
        if keep_last or metric not in entry.metrics or metric not in self.best_metrics:
            return _Progress(
                entry.epoch, entry.epoch, entry.metrics, copy.deepcopy(model.state_dict()), history
            )
        primary, best = entry.metrics[metric], self.best_metrics[metric]
        if (primary > best) if task.higher_is_better else (primary < best):
            state = copy.deepcopy(model.state_dict())
            return _Progress(entry.epoch, entry.epoch, entry.metrics, state, history)
        return replace(self, epoch=entry.epoch, history=history)


def _train_loader(data: DataBundle, options: FitOptions) -> TensorLoader | BatchSource:
    """The training batches of this process: all of them, or this rank's share of each when distributed."""
    if options.batches is not None:  # never builds a loader over the training split
        if distributed.is_distributed():
            raise InputError(f"{options.desc}: distill.data_free runs in one process; drop --nproc")
        return options.batches
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
    return loader


def _run_epoch(run: _Training, epoch: int, log_first_step: bool) -> EpochLog:
    """Train one epoch, evaluate the result, and log the epoch (losses averaged over batches and ranks)."""
    epoch_start = time.perf_counter()
    total, sums, batches = _train_epoch(run, epoch, log_first_step)
    metrics = run.evaluate()
    means = distributed.mean_over_ranks({"": total, **sums})  # every rank ran the same number of batches
    return EpochLog(
        epoch=epoch,
        train_loss=means.pop("") / max(1, batches),
        loss_terms={k: v / max(1, batches) for k, v in means.items()},
        metrics=metrics,
        lr=run.optimizer.param_groups[0]["lr"],
        seconds=time.perf_counter() - epoch_start,
    )


def _train_epoch(run: _Training, epoch: int, log_first_step: bool) -> tuple[float, dict[str, float], int]:
    """One pass over this process's training batches: ``(sum of batch losses, sums of loss terms, batches)``.

    ``log_first_step`` logs the first step's loss (mean over ranks) at debug level: the number that tells
    whether two launches (1 process vs N ranks, fresh vs resumed) start from the same computation.
    """
    options = run.options
    run.loader.set_epoch(epoch)
    if hasattr(run.compute_loss, "set_epoch"):
        run.compute_loss.set_epoch(epoch)  # losses with schedules (e.g. hints first, then logits)
    with_indices = bool(getattr(run.compute_loss, "uses_sample_indices", False))
    run.train_mode()
    sums: dict[str, float] = {}
    total, batches = 0.0, 0
    bar = tqdm(  # disable=None: no bar when stderr is not a terminal (CI logs, redirects)
        # on a GPU, the next batch is assembled meanwhile; not a batch source's (synthesis uses the student)
        options.device.prefetch(run.loader.indexed()) if options.batches is None else run.loader.indexed(),
        total=len(run.loader),
        desc=f"{options.desc} {epoch}/{options.optim.epochs}",
        leave=False,
        unit="batch",
        disable=None,
    )
    device = options.device
    for images, targets, indices in bar:
        images, targets = device.batch(images), device.batch(targets)  # indices stay on the host
        with device.autocast():  # the forward passes; the objective computes its losses in float32
            loss, terms = (
                run.step(images, targets, indices=indices) if with_indices else run.step(images, targets)
            )
        if not torch.isfinite(loss):
            raise EdgekdError(
                f"{options.desc}: loss became {loss.item()} at epoch {epoch}; lower the learning rate"
            )
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if options.after_backward is not None:
            run.scaler.unscale_(
                run.optimizer
            )  # the hook sees (and adds to) true gradients; no-op unless fp16
            options.after_backward()
        run.scaler.step(run.optimizer)  # skips the step when fp16 gradients overflowed
        run.scaler.update()
        run.scheduler.step()
        total += float(loss.detach())
        batches += 1
        if batches == 1 and log_first_step:  # the first step's loss, to compare launches by
            first = distributed.mean_over_ranks({"loss": total})["loss"]
            log.debug("%s: first step loss %.6f (batch %d)", options.desc, first, options.batch_size)
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + value
        bar.set_postfix(loss=f"{total / batches:.4f}")
    return total, sums, batches


def _log_epoch(run: _Training, entry: EpochLog, progress: _Progress) -> None:
    """One line per epoch in ``edgekd.log``: what a user watches, and what the tests find epochs by."""
    metric = run.task.primary_metric
    if metric not in entry.metrics:
        log.info(
            "%s epoch %d: loss %.4f %.1fs", run.options.desc, entry.epoch, entry.train_loss, entry.seconds
        )
        return
    log.info(
        "%s epoch %d: loss %.4f val %s %.4f (best %.4f @ %d) %.1fs",
        run.options.desc,
        entry.epoch,
        entry.train_loss,
        metric,
        entry.metrics[metric],
        progress.best_metrics[metric],
        progress.best_epoch,
        entry.seconds,
    )


def _resume(run: _Training) -> _Progress | None:
    """Restore the last epoch checkpoint into ``run`` (every rank gets rank 0's) and return its progress.

    ``None`` when ``options`` does not ask to resume or there is no checkpoint yet: training starts over.
    """
    state = distributed.on_main(lambda: _resume_state(run.options))
    if state is None:
        return None
    run.model.load_state_dict(state["model"])
    if run.extra is not None and state.get("extra") is not None:
        run.extra.load_state_dict(state["extra"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):  # fp16 runs: the loss scale reached so far
        run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("batches") is not None and hasattr(run.loader, "load_state_dict"):
        run.loader.load_state_dict(state["batches"])  # e.g. generators, memory bank and RNG of data-free mode
    log.info("%s: resumed after epoch %d", run.options.desc, state["epoch"])
    return _Progress(
        epoch=state["epoch"],
        best_epoch=state["best_epoch"],
        best_metrics=state["best_metrics"],
        best_state=state["best_state"],
        history=tuple(EpochLog(**h) for h in state["history"]),
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


def _save_checkpoint(path: Path, run: _Training, progress: _Progress) -> None:
    """Write everything :func:`_resume` needs to continue after ``progress.epoch``.

    Written atomically: a kill mid-write leaves the previous epoch's checkpoint, never a truncated one.
    """
    from edgekd.results import to_dict

    state = {
        "model": run.model.state_dict(),
        "extra": run.extra.state_dict() if run.extra is not None else None,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "epoch": progress.epoch,
        "best_state": progress.best_state,
        "best_metrics": progress.best_metrics,
        "best_epoch": progress.best_epoch,
        "history": [to_dict(h) for h in progress.history],
        "torch_rng": torch.get_rng_state(),
        "batches": run.loader.state_dict() if hasattr(run.loader, "state_dict") else None,
    }
    write_with(path, lambda tmp: torch.save(state, tmp))
