"""``image_folder``: classification data in torchvision's ImageFolder layout, for users' own images.

Layout (one sub-directory per class, the same class names in both splits)::

    ROOT/train/<class>/*.png|jpg|...
    ROOT/val/<class>/*.png|jpg|...

Class discovery is torchvision's (``find_classes``: sorted sub-directory names), so a model trained with
``torchvision.datasets.ImageFolder`` on the same tree has the same class indices. Small sets are decoded once
into memory as uint8; large ones (over 1 GiB as uint8) are streamed from disk through DataLoader workers
(``data.workers``) with random-resized crop + flip for training and resize + centre crop for evaluation (see
:mod:`edgekd.data._files`). Normalisation: ``data.preprocessing`` (default: the teacher's, else measured on a
bounded sample of the training split; :mod:`edgekd.data.preprocessing`).

Options (``data.args``): ``size`` ([H, W] or one int; needed in memory when files differ in size; streamed,
the default is the first file's), ``channels`` (1 or 3; default from the first file), ``train``/``eval``
(split directory names, default ``train``/``val``), ``stream`` (auto | true | false).

Recipe::

    data: {name: image_folder, root: /data/parts, workers: 2, args: {size: [224, 224], channels: 3}}
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgekd.data import register_dataset
from edgekd.data._files import (
    IMAGE_SUFFIXES,
    FolderParams,
    folder_splits,
    guess_channels,
    stack_images,
    stream_choice,
)
from edgekd.data.base import DataBundle, TensorSplit
from edgekd.data.stream import FileSplit
from edgekd.data.transforms import SampleReader
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig


class ImageFolderParams(FolderParams):
    """``data.args`` of ``image_folder``: the folder datasets' common options (size, channels, split names)."""


def _samples(directory: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    from torchvision.datasets.folder import make_dataset

    index = {c: i for i, c in enumerate(classes)}
    try:
        found = make_dataset(str(directory), index, extensions=IMAGE_SUFFIXES, allow_empty=True)
    except FileNotFoundError as exc:
        raise InputError(f"image_folder: {directory}: {exc}") from None
    if not found:
        raise InputError(f"image_folder: no images under {directory}/<class>/")
    return [Path(p) for p, _ in found], [int(c) for _, c in found]


@register_dataset("image_folder", ImageFolderParams)
def build_image_folder(cfg: DataConfig, params: ImageFolderParams) -> DataBundle:
    """Classification images in ``ROOT/{train,val}/<class>/``: torchvision's ImageFolder layout."""
    from torchvision.datasets.folder import find_classes

    splits_to_read = folder_splits(cfg, params, "image_folder")
    train_dir = splits_to_read[0][1]
    try:
        classes, _ = find_classes(str(train_dir))
    except FileNotFoundError as exc:
        raise InputError(f"image_folder: {train_dir}: {exc}") from None
    found = {}
    for split, directory, limit in splits_to_read:
        paths, labels = _samples(directory, classes)
        if limit is not None and limit < len(paths):
            # a class-balanced prefix would need the labels' order; take an evenly spaced subset instead
            keep = torch.linspace(0, len(paths) - 1, limit).round().long().tolist()
            paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
        found[split] = (paths, torch.tensor(labels, dtype=torch.int64))
    first = found["train"][0][0]
    channels = params.channels or guess_channels(first)
    listed = [paths for paths, _ in found.values()]
    stream, size = stream_choice("image_folder", cfg, params, listed, channels)
    reader = SampleReader(channels, size)
    splits = {
        split: FileSplit(tuple(paths), labels, None, reader, cfg.workers)
        if stream
        else TensorSplit(stack_images(paths, channels, params.size), labels)
        for split, (paths, labels) in found.items()
    }
    if splits["train"].image_shape != splits["eval"].image_shape:
        raise InputError("image_folder: train and eval images differ in size; set data.args.size")
    return DataBundle(
        name="image_folder",
        train=splits["train"],
        eval=splits["eval"],
        val=splits.get("val"),
        num_classes=len(classes),
        preprocessing=None,  # no normalisation of its own: build_data resolves data.preprocessing
        class_names=tuple(classes),
        extra={"source": str(Path(cfg.root or "")), "task": "classification"},
    )
