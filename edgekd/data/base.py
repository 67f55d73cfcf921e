"""In-memory image datasets served as tensors, and the :class:`DataBundle` every stage receives.

Datasets too large to hold in memory (folders of photos) are streamed instead: see :mod:`edgekd.data.stream`.

Why tensors and batch-level augmentation: on a 2-core CPU a per-item PIL round trip costs more than the
student's forward pass. Small datasets (Fashion-MNIST is 47 MB as uint8) are held as one ``uint8`` tensor;
batches are sliced, augmented on the whole batch at once and normalised in one op.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

import torch
import torch.nn.functional as F

from edgekd.errors import InputError

if TYPE_CHECKING:
    from edgekd.data.stream import FileSplit

IGNORE_LABEL = 255  # label of pixels that count nowhere (VOC/Cityscapes convention)


@dataclass(frozen=True)
class Preprocessing:
    """What a deployed model expects: ``x = (pixel / 255 - mean) / std``, NCHW float32.

    ``source`` says where the numbers came from (``preset``, ``declared``, ``measured``, ``teacher``,
    ``dataset``; see :mod:`edgekd.data.preprocessing`), ``preset`` names the preset they are, ``detail`` says
    why in words: the report, the resolved recipe and the ONNX metadata carry all three.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = "dataset"
    preset: str | None = None
    detail: str = ""

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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """C, H, W of every image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def take(self, index: torch.Tensor) -> TensorSplit:
        """The samples at ``index`` (positions in this split), in that order."""
        return TensorSplit(self.images[index], self.targets[index])

    def head(self, limit: int | None) -> TensorSplit:
        return (
            self
            if limit is None or limit >= len(self)
            else TensorSplit(self.images[:limit], self.targets[:limit])
        )


Split: TypeAlias = "TensorSplit | FileSplit"  # what a DataBundle's train/eval/val hold


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
        self.rank, self.world = 0, 1  # see shard()
        self._mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(preprocessing.std, dtype=torch.float32).view(1, -1, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self, rank: int, world: int) -> TensorLoader:
        """Serve only rank ``rank``'s equal share of every batch, out of ``world`` data-parallel ranks.

        DistributedSampler semantics with per-epoch seeding: every rank draws the same epoch order (and the
        same augmentation), padded by wrapping around to a multiple of ``world``; ``batch_size`` stays the
        global batch and rank ``r`` takes the ``r``-th of its ``world`` equal slices. The ranks' batches at
        step ``k`` together are exactly the single-process batch ``k``.
        """
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not one of {world} ranks")
        if self.batch_size % world:
            raise InputError(
                f"data.batch_size {self.batch_size} (the global batch) does not split into {world} equal "
                f"per-process batches; use a multiple of {world}"
            )
        self.rank, self.world = rank, world
        return self

    def __len__(self) -> int:
        n = len(self.split) + (-len(self.split)) % self.world
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, targets, _ in self.indexed():
            yield images, targets

    def indexed(self) -> Iterator[Batch]:
        """The same batches as iterating the loader, each with the split positions of its samples.

        Why: whatever is a pure function of a sample (a frozen teacher's outputs on un-augmented images) can be
        computed once per sample and looked up by these indices in every later epoch.
        """
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = self.epoch_order(gen)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            images, targets = self.split.images[idx], self.split.targets[idx]
            if self.augment:
                images, targets = augment_pair(images, targets, gen)
            if self.world > 1:  # augmented as the whole batch (same draws as one process), then sliced
                part = len(idx) // self.world
                mine = slice(self.rank * part, (self.rank + 1) * part)
                idx, images, targets = idx[mine], images[mine], targets[mine]
            if targets.dtype == torch.uint8:  # label maps are stored compactly, served as class indices
                targets = targets.long()
            yield Batch(self.normalize(images), targets, idx)

    def epoch_order(self, gen: torch.Generator) -> torch.Tensor:
        """This epoch's sample order (drawn from ``gen`` when shuffling), padded to a multiple of the ranks."""
        n = len(self.split)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        pad = (-n) % self.world  # equal shards: wrap around (0 in one process)
        return torch.cat([order, order.repeat(pad // n + 1)[:pad]])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float().div_(255.0) - self._mean) / self._std


def augment_batch(images: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Standard small-image augmentation on a uint8 batch: random crop after zero padding, horizontal flip."""
    return augment_pair(images, None, gen, pad)[0]


def augment_pair(
    images: torch.Tensor, targets: torch.Tensor | None, gen: torch.Generator, pad: int = 2
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`augment_batch`, applying the same crop and flip to dense targets (N×H×W label maps).

    Why paired: a mask must move with its image. Pixels the crop shifts in from outside the image get the
    label ``IGNORE_LABEL`` (255) so they count in no loss or metric. Targets of any other shape (class
    indices, regression values) are returned unchanged.
    """
    n, _, h, w = images.shape
    dense = targets is not None and targets.ndim == 3 and tuple(targets.shape[1:]) == (h, w)
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
    if not dense:
        return out, targets
    padded_masks = F.pad(targets, (pad, pad, pad, pad), value=IGNORE_LABEL)
    masks = padded_masks[batch_idx[:, 0], rows[:, 0], cols[:, 0]]
    masks[flip] = masks[flip].flip(-1)
    return out, masks


@dataclass(frozen=True)
class DataBundle:
    """Everything the pipeline needs to know about a dataset, independent of where it came from.

    A split is a :class:`TensorSplit` (decoded, in memory) or a :class:`~edgekd.data.stream.FileSplit` (files
    decoded batch by batch by DataLoader workers); both serve the same loaders. ``preprocessing`` is ``None``
    only as a builder returns it for data without a normalisation of its own (the folder datasets):
    :func:`edgekd.data.build_data` resolves it (``data.preprocessing``) before anything reads it.
    """

    name: str
    train: Split
    eval: Split
    num_classes: int
    preprocessing: Preprocessing | None
    class_names: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    # What the targets mean beyond their shape, for Task.for_data: "gaze_pitch_yaw" (radians) adds gaze metrics.
    target_kind: str = ""
    # The validation split (``data.val``): what training selects on. ``eval`` is the test split, never selected on.
    val: Split | None = None

    @property
    def in_channels(self) -> int:
        return self.train.image_shape[0]

    @property
    def input_size(self) -> tuple[int, int]:
        return self.train.image_shape[1], self.train.image_shape[2]

    @property
    def streamed(self) -> bool:
        """Whether the splits are read from files as they are served (not held in memory)."""
        return not isinstance(self.train, TensorSplit)

    def train_loader(self, batch_size: int, augment: bool, seed: int, shuffle: bool = True) -> TensorLoader:
        return self._loader(self.train, batch_size, shuffle, augment, seed)

    def eval_loader(self, batch_size: int) -> TensorLoader:
        return self._loader(self.eval, batch_size)

    def val_loader(self, batch_size: int) -> TensorLoader | None:
        """Batches of the validation split, or ``None`` when the recipe has none (``data.val: 0``)."""
        return None if self.val is None else self._loader(self.val, batch_size)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """Real, normalised eval images (used for tracing, export and parity)."""
        return next(iter(self._loader(self.eval.head(batch), batch)))[0]

    def _loader(
        self, split: Split, batch_size: int, shuffle: bool = False, augment: bool = False, seed: int = 0
    ) -> TensorLoader:
        """A :class:`TensorLoader` over an in-memory split, the split's streaming loader over a file split."""
        if self.preprocessing is None:
            raise ValueError(
                f"{self.name}: preprocessing was never resolved (build the data with build_data)"
            )
        if isinstance(split, TensorSplit):
            return TensorLoader(
                split, self.preprocessing, batch_size, shuffle=shuffle, augment=augment, seed=seed
            )
        return split.loader(self.preprocessing, batch_size, shuffle=shuffle, augment=augment, seed=seed)
