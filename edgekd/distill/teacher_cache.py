"""Teacher outputs computed once per training sample and looked up by sample index in every epoch.

Why: without augmentation a frozen teacher in eval mode maps each training image to the same outputs in every
epoch, so its forward pass (for a 4×-larger teacher, a third of a distillation step) needs to run once per
sample, not once per sample per epoch. With augmentation the inputs change every epoch and nothing is cached.

Why the lookup is bit-identical to the per-step forward: the cache is filled by the objective's own teacher
forward, on batches of the training batch size, and in eval mode a sample's outputs do not depend on the other
samples of its batch. ``tests/test_perf_paths.py`` checks that a cached run and an uncached run of the same
recipe end with identical weights.

Where it lives when training runs on a GPU: in device memory when it takes at most a quarter of what is free
there (lookups are then a device-side gather), else in host memory, each batch's rows gathered on the host,
pinned and copied without blocking. On the CPU it is simply host memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

log = logging.getLogger("edgekd")

# One forward of all teachers on a batch: (per-teacher outputs, per-teacher {hooked module: feature}).
TeacherForward = Callable[[torch.Tensor], tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]


@dataclass(frozen=True)
class TeacherCache:
    """Per-sample teacher outputs and hooked features for a whole training split (rows = split positions)."""

    outputs: list[torch.Tensor]
    features: list[dict[str, torch.Tensor]]
    device: torch.device = torch.device("cpu")  # where lookups are served (the training device)

    @property
    def nbytes(self) -> int:
        tensors = [*self.outputs, *(f for feats in self.features for f in feats.values())]
        return sum(t.numel() * t.element_size() for t in tensors)

    def lookup(self, indices: torch.Tensor) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """The rows of ``indices``, in the shapes the per-step teacher forward returns them, on :attr:`device`."""
        outputs = [self._rows(out, indices) for out in self.outputs]
        features = [{k: self._rows(v, indices) for k, v in feats.items()} for feats in self.features]
        return outputs, features

    def _rows(self, table: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        rows = table.index_select(0, indices.to(table.device))
        if rows.device == self.device:
            return rows
        if self.device.type == "cuda":
            return rows.pin_memory().to(self.device, non_blocking=True)
        return rows.to(self.device)


def build_teacher_cache(
    forward: TeacherForward,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_samples: int,
    budget_bytes: int,
    device: torch.device | None = None,
) -> TeacherCache | None:
    """Run ``forward`` once over ``batches`` (the un-augmented split, in order) and keep every sample's outputs.

    Args:
        forward: the objective's teacher forward (eval mode, ``inference_mode``), the same one used per step.
        batches: ``(images, indices)`` covering the split; the first batch sizes the cache.
        num_samples: samples in the split (rows of the cache).
        budget_bytes: largest cache kept; when all outputs and hooked features would need more, nothing is
            cached and the caller computes the teacher per step.
        device: the training device, where lookups are served (default: the CPU).

    Returns:
        The cache, or ``None`` when it would exceed ``budget_bytes``.
    """
    started = time.perf_counter()
    cache: TeacherCache | None = None
    for images, indices in batches:
        outputs, features = forward(images)
        if cache is None:
            per_sample = sum(t[0].numel() * t.element_size() for t in _flatten(outputs, features))
            if per_sample * num_samples > budget_bytes:
                log.info(
                    "distill: teacher outputs not cached (%.1f MiB for %d samples > budget %.1f MiB); "
                    "computing them every step",
                    per_sample * num_samples / 2**20,
                    num_samples,
                    budget_bytes / 2**20,
                )
                return None
            store = _storage(device or torch.device("cpu"), per_sample * num_samples)
            cache = TeacherCache(
                outputs=[_rows(out, num_samples, store) for out in outputs],
                features=[{k: _rows(v, num_samples, store) for k, v in feats.items()} for feats in features],
                device=device or torch.device("cpu"),
            )
        for dst, src in zip(
            _flatten(cache.outputs, cache.features), _flatten(outputs, features), strict=True
        ):
            dst.index_copy_(0, indices.to(dst.device), src.to(dst.device))
    if cache is not None:
        log.info(
            "distill: teacher outputs cached for %d samples (%.1f MiB, %s memory) in %.1f s",
            num_samples,
            cache.nbytes / 2**20,
            cache.outputs[0].device.type if cache.outputs else "cpu",
            time.perf_counter() - started,
        )
    return cache


def _rows(like: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    return torch.empty((n, *like.shape[1:]), dtype=like.dtype, device=device)


def _storage(device: torch.device, nbytes: int) -> torch.device:
    """The GPU itself when the cache takes at most a quarter of its free memory, else host memory."""
    if device.type == "cuda" and nbytes <= torch.cuda.mem_get_info(device)[0] // 4:
        return device
    return torch.device("cpu")


def _flatten(outputs: list[torch.Tensor], features: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    return [*outputs, *(feats[k] for feats in features for k in sorted(feats))]
