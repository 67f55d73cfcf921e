"""``seg_folder``: segmentation data as image/mask file pairs, for users' own data.

Layout (a mask has its image's file stem; masks are PNG)::

    ROOT/train/images/0001.jpg   ROOT/train/masks/0001.png
    ROOT/val/images/0107.jpg     ROOT/val/masks/0107.png

A mask holds one class index per pixel: a grey-scale PNG (``L``) or a palette PNG (``P``, VOC style: the
palette index *is* the class). Pixels equal to 255 are ignored by the loss and every metric. Colour masks
(RGB) need ``data.args.palette``: a list of ``[r, g, b]``, one per class, in class order; a colour not in the
palette is an error (it usually means anti-aliased or JPEG-compressed masks, which cannot hold labels).

Training augmentation (``data.augment``) crops and flips image and mask together
(:func:`edgekd.data.base.augment_pair` in memory; random-resized crop + flip when streamed, see
:mod:`edgekd.data.transforms`). With ``data.args.size`` images are resized bilinearly and masks with nearest
neighbour (labels are never blended). Large sets (over 1 GiB as uint8) are streamed from disk
(``data.args.stream``, :mod:`edgekd.data._files`); then give ``num_classes`` to skip a pass over every mask.

Options (``data.args``): ``size``, ``channels`` (1 or 3; default from the first image), ``num_classes``
(default: largest label + 1), ``class_names``, ``palette``, ``train``/``eval`` (split directories, default
``train``/``val``), ``stream`` (auto | true | false).

Recipe::

    task: segmentation
    data: {name: seg_folder, root: /data/eyes, args: {size: [64, 96], num_classes: 2, class_names: [bg, sclera]}}
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import BeforeValidator, Field, Strict, ValidationInfo, field_validator

from edgekd.data import register_dataset
from edgekd.data._files import (
    FolderParams,
    folder_splits,
    guess_channels,
    list_images,
    stack_images,
    stream_choice,
)
from edgekd.data.base import IGNORE_LABEL, DataBundle, Split, TensorSplit
from edgekd.data.stream import FileSplit
from edgekd.data.transforms import SampleReader
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig

log = logging.getLogger("edgekd")

Byte = Annotated[int, Strict(), Field(ge=0, le=255)]


def _as_text(value: Any) -> Any:
    """Class names as YAML gives them: ``[bg, 1, 2]`` has ints, which name classes as well as words do."""
    return [str(v) if isinstance(v, int | float) else v for v in value] if isinstance(value, list) else value


class SegFolderParams(FolderParams):
    """``data.args`` of ``seg_folder``: the folder options plus what the masks mean (classes, colours)."""

    num_classes: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=IGNORE_LABEL,
        description="Classes; default: the palette's length, else the largest label + 1.",
    )
    class_names: Annotated[tuple[str, ...], BeforeValidator(_as_text)] | None = Field(
        None, description="One name per class, in class order; default class_0, class_1, ..."
    )
    palette: tuple[tuple[Byte, Byte, Byte], ...] | None = Field(
        None,
        min_length=1,
        max_length=IGNORE_LABEL,
        description="[[r, g, b], ...] in class order, for colour (RGB) masks; a colour not listed is an error.",
    )

    @field_validator("class_names")
    @classmethod
    def _one_name_per_class(
        cls, names: tuple[str, ...] | None, info: ValidationInfo
    ) -> tuple[str, ...] | None:
        classes = info.data.get("num_classes")
        if names is not None and classes is not None and len(names) != classes:
            raise ValueError(f"{len(names)} names for {classes} classes")
        return names


def read_mask(path: Path, size: tuple[int, int] | None, palette: np.ndarray | None) -> np.ndarray:
    """H×W uint8 class indices of one mask file (nearest-neighbour resize to ``size``)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.NEAREST)
            if img.mode in ("RGB", "RGBA"):
                if palette is None:
                    raise InputError(
                        f"{path}: colour mask; give data.args.palette ([[r, g, b], ...] in class order) or "
                        "save masks as grey-scale/palette PNGs holding class indices"
                    )
                return _colours_to_labels(path, np.asarray(img.convert("RGB")), palette)
            if img.mode not in ("L", "P", "1", "I", "I;16"):
                raise InputError(f"{path}: unsupported mask mode {img.mode}; save it as a grey-scale PNG")
            array = np.asarray(img)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: cannot read mask ({exc})") from None
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.max(initial=0) > IGNORE_LABEL:
        raise InputError(f"{path}: mask value {int(array.max())} is not a class index (0..254, 255 = ignore)")
    return array.astype(np.uint8)


def _colours_to_labels(path: Path, rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    order = np.argsort(keys)
    pos = np.clip(np.searchsorted(keys[order], codes), 0, len(keys) - 1)
    found = keys[order][pos] == codes
    if not found.all():
        y, x = np.argwhere(~found)[0]
        raise InputError(
            f"{path}: colour {tuple(int(v) for v in rgb[y, x])} at ({y}, {x}) is not in data.args.palette"
        )
    return order[pos].astype(np.uint8)


def _pairs(directory: Path) -> tuple[list[Path], list[Path]]:
    images_dir, masks_dir = directory / "images", directory / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise InputError(
                f"seg_folder: {d} not found; expected {directory}/images/ and {directory}/masks/"
            )
    masks = {p.stem: p for p in list_images(masks_dir)}
    images = list_images(images_dir)
    if not images:
        raise InputError(f"seg_folder: no images in {images_dir}")
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise InputError(
            f"seg_folder: {images_dir}/{missing[0]} has no mask {masks_dir}/{Path(missing[0]).stem}.png"
        )
    return images, [masks[p.stem] for p in images]


def _in_memory(
    directory: Path, pairs: tuple[list[Path], list[Path]], params: SegFolderParams, channels: int
) -> TensorSplit:
    """One split decoded up front: images resized bilinearly, masks by nearest neighbour, sizes checked."""
    palette = np.asarray(params.palette, dtype=np.int64) if params.palette else None
    pixels = stack_images(pairs[0], channels, params.size)
    labels = torch.from_numpy(np.stack([read_mask(m, params.size, palette) for m in pairs[1]]))
    if labels.shape[1:] != pixels.shape[2:]:
        raise InputError(
            f"seg_folder: masks in {directory} are {tuple(labels.shape[1:])} but images are "
            f"{tuple(pixels.shape[2:])}; set data.args.size or fix the files"
        )
    return TensorSplit(pixels, labels)


def _largest_label(splits: Sequence[Split]) -> int:
    """The largest class index any mask holds (255, ignored, excluded); streamed masks are read one by one."""
    largest = -1
    for split in splits:
        if isinstance(split, TensorSplit):
            labelled = split.targets[split.targets != IGNORE_LABEL]
            largest = max(largest, int(labelled.max()) if labelled.numel() else -1)
            continue
        log.info(
            "seg_folder: reading %d masks for their classes (set data.args.num_classes to skip)", len(split)
        )
        for mask in split.masks or ():
            labels = split.reader.read_mask(mask) if split.reader.read_mask else np.zeros(0, np.uint8)
            labelled = labels[labels != IGNORE_LABEL]
            largest = max(largest, int(labelled.max()) if labelled.size else -1)
    return largest


@register_dataset("seg_folder", SegFolderParams)
def build_seg_folder(cfg: DataConfig, params: SegFolderParams) -> DataBundle:
    """Image/mask PNG pairs in ``ROOT/{train,val}/{images,masks}/``, matched by file stem."""
    palette = np.asarray(params.palette, dtype=np.int64) if params.palette else None
    listed = {}
    for split, directory, limit in folder_splits(cfg, params, "seg_folder"):
        images, masks = _pairs(directory)
        listed[split] = (directory, (images[:limit], masks[:limit]))
    first = listed["train"][1][0][0]
    channels = params.channels or guess_channels(first)
    images = [pairs[0] for _, pairs in listed.values()]
    stream, size = stream_choice("seg_folder", cfg, params, images, channels)
    reader = SampleReader(channels, size, functools.partial(read_mask, size=None, palette=palette))
    splits = {
        split: FileSplit(tuple(pairs[0]), None, tuple(pairs[1]), reader, cfg.workers)
        if stream
        else _in_memory(directory, pairs, params, channels)
        for split, (directory, pairs) in listed.items()
    }
    if splits["train"].image_shape != splits["eval"].image_shape:
        raise InputError("seg_folder: train and eval images differ in size; set data.args.size")
    declared = params.num_classes or (len(palette) if palette is not None else None)
    scan = declared is None or not stream  # streamed masks are read for their classes only when needed
    found = max(_largest_label(list(splits.values())) + 1, 1) if scan else 1
    num_classes = declared or found
    if found > num_classes:
        raise InputError(
            f"seg_folder: masks hold class {found - 1} but data.args.num_classes is {num_classes}"
        )
    names = params.class_names or ()
    if names and len(names) != num_classes:
        raise InputError(f"data.args.class_names: {len(names)} names for {num_classes} classes")
    return DataBundle(
        name="seg_folder",
        train=splits["train"],
        eval=splits["eval"],
        val=splits.get("val"),
        num_classes=num_classes,
        preprocessing=None,  # no normalisation of its own: build_data resolves data.preprocessing
        class_names=names or tuple(f"class_{i}" for i in range(num_classes)),
        extra={"source": str(Path(cfg.root or "")), "task": "segmentation"},
    )
