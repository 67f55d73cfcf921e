"""In-memory image datasets served as tensors, and the :class:`DataBundle` every stage receives.

Why tensors and batch-level augmentation: on a 2-core CPU a per-item PIL round trip costs more than the
student's forward pass. Small datasets (Fashion-MNIST is 47 MB as uint8) are held as one ``uint8`` tensor;
batches are sliced, augmented on the whole batch at once and normalised in one op.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F

from edgekd.errors import InputError


@dataclass(frozen=True)
class Preprocessing:
    """What a deployed model expects: ``x = (pixel / 255 - mean) / std``, NCHW float32."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def describe(self) -> str:
        return f"x = (pixel/255 - mean)/std; mean={list(self.mean)}, std={list(self.std)}; NCHW float32"


@dataclass(frozen=True)
class TensorSplit:
    """One split: ``images`` uint8 N×C×H×W, ``targets`` (class indices, masks or values)."""

    images: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise InputError(f"dataset images must be N×C×H×W, got shape {tuple(self.images.shape)}")
        if len(self.images) == 0:
            raise InputError("dataset split is empty")
        if len(self.images) != len(self.targets):
            raise InputError(f"dataset has {len(self.images)} images but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.images)

    def head(self, limit: int | None) -> TensorSplit:
        return (
            self
            if limit is None or limit >= len(self)
            else TensorSplit(self.images[:limit], self.targets[:limit])
        )


class Batch(NamedTuple):
    """One training batch: normalised ``images``, ``targets`` and the ``indices`` of its samples in the split."""

    images: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor


class TensorLoader:
    """Batches of normalised float images from a :class:`TensorSplit`, optionally shuffled and augmented.

    Iterating twice with the same ``seed`` and epoch yields the same batches (resume and DDP rely on that).
    Iteration yields ``(images, targets)``; :meth:`indexed` adds which samples each batch holds.
    """

    def __init__(
        self,
        split: TensorSplit,
        preprocessing: Preprocessing,
        batch_size: int,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self._mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(preprocessing.std, dtype=torch.float32).view(1, -1, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, targets, _ in self.indexed():
            yield images, targets

    def indexed(self) -> Iterator[Batch]:
        """The same batches as iterating the loader, each with the split positions of its samples.

        Why: whatever is a pure function of a sample (a frozen teacher's outputs on un-augmented images) can be
        computed once per sample and looked up by these indices in every later epoch.
        """
        n = len(self.split)
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            images = self.split.images[idx]
            if self.augment:
                images = augment_batch(images, gen)
            yield Batch(self.normalize(images), self.split.targets[idx], idx)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float().div_(255.0) - self._mean) / self._std


def augment_batch(images: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Standard small-image augmentation on a uint8 batch: random crop after zero padding, horizontal flip."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w)
    batch_idx = torch.arange(n).view(n, 1, 1, 1)
    chan_idx = torch.arange(images.shape[1]).view(1, -1, 1, 1)
    out = padded[batch_idx, chan_idx, rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


@dataclass(frozen=True)
class DataBundle:
    """Everything the pipeline needs to know about a dataset, independent of where it came from."""

    name: str
    train: TensorSplit
    eval: TensorSplit
    num_classes: int
    preprocessing: Preprocessing
    class_names: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])

    def train_loader(self, batch_size: int, augment: bool, seed: int, shuffle: bool = True) -> TensorLoader:
        return TensorLoader(
            self.train, self.preprocessing, batch_size, shuffle=shuffle, augment=augment, seed=seed
        )

    def eval_loader(self, batch_size: int) -> TensorLoader:
        return TensorLoader(self.eval, self.preprocessing, batch_size)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """Real, normalised eval images (used for tracing, export and parity)."""
        loader = TensorLoader(self.eval.head(batch), self.preprocessing, batch)
        return next(iter(loader))[0]
