"""One-shot structural pruning: a copy of a model pruned to a MACs/params/channels goal with torch-pruning.

``prune_model`` never modifies the model it is given: every probe prunes a deep copy, and the copy that meets the
target is returned. That keeps the unpruned teacher intact for distillation and makes each probe independent,
so the same seed always yields the same architecture and weights.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm import tqdm

from edgekd.data.base import DataBundle
from edgekd.errors import EdgekdError, InputError
from edgekd.models.complexity import Complexity, count_complexity
from edgekd.prune.importance import build_importance, needs_gradients
from edgekd.prune.layers import (
    IGNORE_HINT,
    channel_records,
    describe_error,
    forward_or_explain,
    layer_widths,
    narrowed_heads,
    resolve_ignored,
)
from edgekd.prune.plan import plan_graph
from edgekd.prune.search import SearchOutcome, WindowMissed, search_ratio
from edgekd.recipe.schema import PruneConfig
from edgekd.results import PruneResult
from edgekd.tasks.base import Task

log = logging.getLogger(__name__)

# Batch size of the calibration batches that gradient-based criteria (taylor) back-propagate.
CALIBRATION_BATCH_SIZE = 64
_INPUT_HINT = "check teacher.model (in_channels, num_classes) against the dataset"

Batch = tuple[torch.Tensor, torch.Tensor]


def prune_model(
    model: nn.Module, data: DataBundle, task: Task, cfg: PruneConfig, seed: int
) -> tuple[nn.Module, PruneResult]:
    """Prune a copy of ``model`` as ``cfg`` says and report what changed.

    Args:
        model: the teacher; left untouched.
        data: real data: eval images trace the graph and count MACs, training batches calibrate ``taylor``.
        task: supplies the criterion for gradient-based importance and reads the model output.
        cfg: the recipe's ``prune`` section.
        seed: makes random importance and calibration batches reproducible.

    Returns:
        The pruned copy (eval mode, no gradients) and a :class:`PruneResult`.

    Raises:
        InputError: unknown ignored layer, a model torch-pruning cannot trace or that breaks once pruned, or a
            MACs/params target that cannot be met within tolerance.
    """
    start = time.perf_counter()
    pruner = _Pruner(model, data, task, cfg, seed)
    if cfg.target == "channels":
        pruned, after = pruner.probe(cfg.reduction)
    else:
        outcome = _search(pruner, cfg)
        pruned, after = pruner.probe(outcome.ratio)  # cached: the accepted ratio is always the last probe
    pruner.close()
    for name, inputs, outputs in narrowed_heads(model, pruned, pruner.heads):
        log.warning(
            "prune: head '%s' now reads %d channels for %d outputs, a bottleneck fine-tuning rarely recovers; "
            "add the layer feeding it to prune.ignored_layers",
            name,
            inputs,
            outputs,
        )
    result = PruneResult(
        importance=cfg.importance,
        target=cfg.target,
        reduction_goal=cfg.reduction,
        macs_before=pruner.before.macs,
        macs_after=after.macs,
        params_before=pruner.before.params,
        params_after=after.params,
        steps=cfg.iterative_steps,
        round_to=pruner.round_to,
        layers=channel_records(layer_widths(model), layer_widths(pruned)),
        seconds=time.perf_counter() - start,
    )
    log.info(
        "pruned with %s: MACs %d -> %d (-%.1f%%), params %d -> %d (-%.1f%%)",
        cfg.importance,
        result.macs_before,
        result.macs_after,
        100 * result.macs_reduction,
        result.params_before,
        result.params_after,
        100 * result.params_reduction,
    )
    return pruned, result


def _search(pruner: _Pruner, cfg: PruneConfig) -> SearchOutcome:
    """Search the channel ratio; if ``round_to`` makes the goal's window unreachable, halve it and retry.

    Why: with ``round_to`` every layer's width moves in multiples of it, so on a small net (16/32/64 channels)
    the reachable reductions are a few coarse steps that can jump over ``reduction ± tolerance``. The MACs or
    params budget is the user's requirement; SIMD-friendly widths are a preference, so the rounding gives way
    (8 → 4 → 2 → none), with a warning, and the report records the ``round_to`` actually used.
    """
    while True:
        try:
            return search_ratio(
                pruner.achieved, cfg.reduction, cfg.tolerance, cfg.max_layer_ratio, what=cfg.target
            )
        except WindowMissed as exc:
            if not pruner.round_to or pruner.round_to <= 1:
                raise
            finer = pruner.round_to // 2 if pruner.round_to > 2 else None
            log.warning("%s; retrying with prune.round_to %s", str(exc).split(";")[0], finer)
            pruner.round_to = finer


class _Pruner:
    """Prunes deep copies of one model at a given channel ratio; remembers the last probe."""

    def __init__(self, model: nn.Module, data: DataBundle, task: Task, cfg: PruneConfig, seed: int) -> None:
        self.model, self.task, self.cfg, self.seed = model, task, cfg, seed
        self.round_to = cfg.round_to  # may be lowered by _search when the rounding jumps over the goal
        resolve_ignored(model, cfg.ignored_layers)  # fail fast on a typo, before any tracing
        self.device = next(model.parameters(), torch.empty(0)).device
        self.example = data.example_input().to(self.device)
        reference = copy.deepcopy(model).eval()
        self.output_shape = self._output_shape(
            forward_or_explain(reference, self.example, "the model", _INPUT_HINT)
        )
        self.before = count_complexity(reference, self.example)
        self.plan = plan_graph(reference, self.example)
        self.heads = list(self.plan.heads)
        self.needs_gradients = needs_gradients(cfg.importance)
        self.batches: list[Batch] = []
        # What each probe deep-copies. torch-pruning skips parameters without requires_grad, so a frozen
        # model (e.g. a teacher after distillation froze it) would silently prune nothing: unfreeze a copy.
        self.template = copy.deepcopy(model).requires_grad_(True) if _is_frozen(model) else model
        if self.needs_gradients:
            loader = data.train_loader(CALIBRATION_BATCH_SIZE, augment=False, seed=seed)
            self.batches = list(itertools.islice(loader, cfg.calibration_batches))
            # The first step's gradients are the same in every probe: compute them once, copy them per probe.
            self.template = copy.deepcopy(model).eval()
            self._accumulate_gradients(self.template)
        self._last: tuple[float, int | None, nn.Module, Complexity] | None = None
        self._bar = tqdm(desc=f"prune ({cfg.importance})", unit="probe", leave=False, disable=None)

    def achieved(self, ratio: float) -> float:
        """Reduction (of MACs or params, per ``cfg.target``) reached at channel ratio ``ratio``."""
        _, after = self.probe(ratio)
        value = after.macs if self.cfg.target == "macs" else after.params
        base = self.before.macs if self.cfg.target == "macs" else self.before.params
        reached = 1.0 - value / base if base else 0.0
        self._bar.set_postfix(ratio=f"{ratio:.3f}", reduction=f"{reached:.3f}")
        log.debug("channel ratio %.4f removes %.2f%% of %s", ratio, 100 * reached, self.cfg.target)
        return reached

    def probe(self, ratio: float) -> tuple[nn.Module, Complexity]:
        if self._last is not None and self._last[:2] == (ratio, self.round_to):
            return self._last[2], self._last[3]
        candidate = self._prune_copy(ratio)
        complexity = count_complexity(candidate, self.example)
        self._last = (ratio, self.round_to, candidate, complexity)
        self._bar.update(1)
        return candidate, complexity

    def close(self) -> None:
        self._bar.close()

    def _prune_copy(self, ratio: float) -> nn.Module:
        cfg = self.cfg
        candidate = copy.deepcopy(self.template).eval()
        for source, target in zip(self.template.parameters(), candidate.parameters(), strict=True):
            target.grad = None if source.grad is None else source.grad.clone()  # deepcopy drops .grad
        ignored = resolve_ignored(candidate, cfg.ignored_layers)
        settings = {
            "importance": build_importance(cfg.importance),
            "global_pruning": cfg.global_pruning,
            "pruning_ratio": ratio,
            "max_pruning_ratio": cfg.max_layer_ratio,
            "round_to": self.round_to,
        }
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            try:
                pruner = self.plan.pruner(
                    candidate, self.example, ignored, iterative_steps=cfg.iterative_steps, **settings
                )
            except Exception as exc:  # torch-pruning raises anything from tracing user code
                raise InputError(
                    f"torch-pruning cannot trace the model ({describe_error(exc)}); {IGNORE_HINT}"
                ) from exc
            try:
                for step in range(cfg.iterative_steps):
                    if self.needs_gradients and step > 0:
                        self._accumulate_gradients(candidate)
                    pruner.step()
                    self.plan.after_step(candidate, pruner)  # the sizes attention layers reshape by
                self.plan.finish(candidate, ignored, **settings)  # inside modules torch-pruning cannot trace
            except Exception as exc:
                hint = self.plan.step_hint(candidate, pruner)
                raise InputError(
                    f"torch-pruning failed to prune the model ({describe_error(exc)}); {hint}"
                ) from exc
        for param in candidate.parameters():
            param.grad = None
        out = self.plan.check(candidate, self.example)
        if self._output_shape(out) != self.output_shape:
            raise EdgekdError(
                f"pruning changed the model output shape {self.output_shape} -> {self._output_shape(out)}; "
                "add the output layer to prune.ignored_layers and report this as an edgekd bug"
            )
        return candidate

    def _accumulate_gradients(self, model: nn.Module) -> None:
        """Fill ``param.grad`` from the calibration batches (eval mode: BatchNorm statistics stay put)."""
        criterion = self.task.criterion()
        model.zero_grad(set_to_none=True)
        for param in model.parameters():
            param.requires_grad_(True)
        with torch.enable_grad():
            for images, targets in self.batches:
                images, targets = images.to(self.device), targets.to(self.device)
                loss = criterion(self.task.output_tensor(model(images)), targets) / len(self.batches)
                loss.backward()

    def _output_shape(self, out: object) -> Sequence[int]:
        return tuple(self.task.output_tensor(out).shape)


def _is_frozen(model: nn.Module) -> bool:
    return any(not p.requires_grad for p in model.parameters())
