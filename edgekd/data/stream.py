"""Streamed splits: image files decoded batch by batch by DataLoader workers, never held in memory together.

Why: a folder of tens of thousands of photos does not fit in memory as one uint8 tensor (50k images at 224²
are 7.5 GB). A :class:`FileSplit` holds only paths and targets; its :class:`StreamLoader` serves the same
batches a :class:`~edgekd.data.base.TensorLoader` would, with the same contract: normalised float images,
one deterministic order per (``seed``, epoch), ``shard(rank, world)`` slices of the global batch,
``indexed()`` positions for the teacher-output cache. Augmentation is drawn per sample from
(``seed``, epoch, position), so it does not depend on the batch, the rank or the number of workers.

The folder datasets choose between this and the in-memory path by size (:func:`edgekd.data._files.stream_choice`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from edgekd.data.base import Batch, Preprocessing, TensorLoader
from edgekd.data.transforms import SampleReader
from edgekd.errors import InputError


@dataclass(frozen=True)
class FileSplit:
    """One split as files: image paths, their targets (class indices or mask files), and how to decode them.

    Duck-types :class:`~edgekd.data.base.TensorSplit` for the pipeline: ``len``, ``image_shape``, ``head``,
    ``take`` (validation carving), and ``images``/``targets`` as :class:`FileArray` views that decode only
    what is indexed (a report's strip of sample images, an input shape).

    Attributes:
        paths: Image files, in split order.
        labels: Class indices (classification), one per path; ``None`` with ``masks``.
        masks: Mask files (segmentation), one per path; ``None`` with ``labels``.
        reader: Channels, output size and mask reader.
        workers: DataLoader worker processes decoding (``data.workers``; 0 decodes in this process).
    """

    paths: tuple[Path, ...]
    labels: torch.Tensor | None
    masks: tuple[Path, ...] | None
    reader: SampleReader
    workers: int = 0

    def __post_init__(self) -> None:
        if not self.paths:
            raise InputError("dataset split is empty")
        count = len(self.labels) if self.labels is not None else len(self.masks or ())
        if count != len(self.paths):
            raise InputError(f"dataset has {len(self.paths)} images but {count} targets")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """C, H, W of every image as served (known without decoding any)."""
        return self.reader.channels, *self.reader.size

    @property
    def images(self) -> FileArray:
        return FileArray(self, "images")

    @property
    def targets(self) -> torch.Tensor | FileArray:
        return self.labels if self.labels is not None else FileArray(self, "masks")

    def take(self, index: torch.Tensor | Sequence[int]) -> FileSplit:
        """The samples at ``index`` (positions in this split), in that order; nothing is read."""
        positions = [int(i) for i in index]
        return FileSplit(
            tuple(self.paths[i] for i in positions),
            None if self.labels is None else self.labels[torch.tensor(positions, dtype=torch.long)],
            None if self.masks is None else tuple(self.masks[i] for i in positions),
            self.reader,
            self.workers,
        )

    def head(self, limit: int | None) -> FileSplit:
        return self if limit is None or limit >= len(self) else self.take(range(limit))

    def sample(self, position: int, rng: random.Random | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (C×H×W uint8) and target of one sample; ``rng`` draws its augmentation (``None``: none)."""
        mask = self.masks[position] if self.masks is not None else None
        image, labels = self.reader.read(self.paths[position], mask, rng)
        target = torch.from_numpy(labels) if labels is not None else self.labels[position]
        return torch.from_numpy(image), target

    def loader(
        self, preprocessing: Preprocessing, batch_size: int, shuffle: bool, augment: bool, seed: int
    ) -> StreamLoader:
        return StreamLoader(self, preprocessing, batch_size, shuffle=shuffle, augment=augment, seed=seed)


class FileArray:
    """The images or masks of a :class:`FileSplit` as an array: ``shape`` without decoding, indexing decodes.

    Why: code written for in-memory splits reads ``split.images.shape`` or ``split.head(4).images.numpy()``;
    this keeps that working on a streamed split while never decoding more than what is indexed. Samples are
    decoded with the evaluation transform.
    """

    dtype = torch.uint8

    def __init__(self, split: FileSplit, part: str) -> None:
        self.split, self.part = split, part

    @property
    def shape(self) -> torch.Size:
        c, h, w = self.split.image_shape
        return torch.Size((len(self.split), c, h, w) if self.part == "images" else (len(self.split), h, w))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, int):
            return self[[index]][0]
        if isinstance(index, slice):
            index = range(len(self.split))[index]
        elif isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            index = index.nonzero().flatten()
        part = 0 if self.part == "images" else 1
        return torch.stack([self.split.sample(int(i), None)[part] for i in index])

    def numpy(self) -> Any:
        """Every sample decoded, as a numpy array (meant for a few samples: ``split.head(n).images.numpy()``)."""
        return self[:].numpy()


class _Samples(Dataset):
    """A :class:`FileSplit` as a map-style dataset of ``(image, target, position)``, augmented or not."""

    def __init__(self, split: FileSplit, augment_key: int | None) -> None:
        self.split, self.augment_key = split, augment_key

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        # the draws of one sample depend only on (seed, epoch) and its position: any worker, batch or rank
        rng = None if self.augment_key is None else random.Random(f"{self.augment_key}:{position}")
        image, target = self.split.sample(position, rng)
        return image, target, position


def _collate(items: list[tuple[torch.Tensor, torch.Tensor, int]]) -> tuple[torch.Tensor, ...]:
    images, targets, positions = zip(*items, strict=True)
    return torch.stack(images), torch.stack(targets), torch.tensor(positions, dtype=torch.long)


class StreamLoader(TensorLoader):
    """Batches of a :class:`FileSplit`, decoded by ``split.workers`` DataLoader workers; a TensorLoader's contract.

    Order, padding and sharding are :class:`~edgekd.data.base.TensorLoader`'s (the same epoch order for the same
    ``seed``); augmentation is the photo one (random-resized crop + flip, :mod:`edgekd.data.transforms`) instead
    of the small-image pad-and-crop, and a rank reads only its own slice of each global batch.
    """

    split: FileSplit

    def indexed(self) -> Iterator[Batch]:
        """The same batches as iterating the loader, each with the split positions of its samples."""
        key = self.seed * 100_003 + self.epoch
        order = self.epoch_order(torch.Generator().manual_seed(key))
        batches = []
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.world > 1:  # this rank's slice of the global batch, as TensorLoader takes it
                part = len(idx) // self.world
                idx = idx[self.rank * part : (self.rank + 1) * part]
            batches.append(idx.tolist())
        loader = DataLoader(
            _Samples(self.split, key if self.augment else None),
            batch_sampler=batches,
            num_workers=self.split.workers,
            collate_fn=_collate,
        )
        try:
            for images, targets, positions in loader:
                if targets.dtype == torch.uint8:  # label maps are decoded compactly, served as class indices
                    targets = targets.long()
                yield Batch(self.normalize(images), targets, positions)
        except InputError as exc:  # a worker's error arrives wrapped in its traceback: keep its one line
            raise InputError(
                str(exc).strip().splitlines()[-1].removeprefix("edgekd.errors.InputError: ")
            ) from None
