"""``seg_folder``: segmentation data as image/mask file pairs, for users' own data.

Layout (a mask has its image's file stem; masks are PNG)::

    ROOT/train/images/0001.jpg   ROOT/train/masks/0001.png
    ROOT/val/images/0107.jpg     ROOT/val/masks/0107.png

A mask holds one class index per pixel: a grey-scale PNG (``L``) or a palette PNG (``P``, VOC style: the
palette index *is* the class). Pixels equal to 255 are ignored by the loss and every metric. Colour masks
(RGB) need ``data.args.palette``: a list of ``[r, g, b]``, one per class, in class order; a colour not in the
palette is an error (it usually means anti-aliased or JPEG-compressed masks, which cannot hold labels).

Training augmentation (``data.augment``) crops and flips image and mask together
(:func:`edgekd.data.base.augment_pair`). With ``data.args.size`` images are resized bilinearly and masks
with nearest neighbour (labels are never blended).

Options (``data.args``): ``size``, ``channels`` (1 or 3; default from the first image), ``num_classes``
(default: largest label + 1), ``class_names``, ``palette``, ``train``/``eval`` (split directories, default
``train``/``val``).

Recipe::

    task: segmentation
    data: {name: seg_folder, root: /data/eyes, args: {size: [64, 96], num_classes: 2, class_names: [bg, sclera]}}
"""

from __future__ import annotations

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
    preprocessing_of,
    stack_images,
)
from edgekd.data.base import IGNORE_LABEL, DataBundle, TensorSplit
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig

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


@register_dataset("seg_folder", SegFolderParams)
def build_seg_folder(cfg: DataConfig, params: SegFolderParams) -> DataBundle:
    """Image/mask PNG pairs in ``ROOT/{train,val}/{images,masks}/``, matched by file stem."""
    splits_to_read = folder_splits(cfg, params, "seg_folder")
    palette = np.asarray(params.palette, dtype=np.int64) if params.palette else None
    channels = params.channels
    splits = {}
    for split, directory, limit in splits_to_read:
        images, masks = _pairs(directory)
        images, masks = images[:limit], masks[:limit]
        channels = channels or guess_channels(images[0])
        pixels = stack_images(images, channels, params.size)
        labels = torch.from_numpy(np.stack([read_mask(m, params.size, palette) for m in masks]))
        if labels.shape[1:] != pixels.shape[2:]:
            raise InputError(
                f"seg_folder: masks in {directory} are {tuple(labels.shape[1:])} but images are "
                f"{tuple(pixels.shape[2:])}; set data.args.size or fix the files"
            )
        splits[split] = TensorSplit(pixels, labels)
    if splits["train"].images.shape[2:] != splits["eval"].images.shape[2:]:
        raise InputError("seg_folder: train and eval images differ in size; set data.args.size")
    labelled = torch.cat([s.targets[s.targets != IGNORE_LABEL] for s in splits.values()])
    found = int(labelled.max()) + 1 if labelled.numel() else 1
    num_classes = params.num_classes or (len(palette) if palette is not None else found)
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
        preprocessing=preprocessing_of(splits["train"].images),
        class_names=names or tuple(f"class_{i}" for i in range(num_classes)),
        extra={"source": str(Path(cfg.root or "")), "task": "segmentation"},
    )
