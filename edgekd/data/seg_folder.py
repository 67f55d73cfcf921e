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
from typing import Any

import numpy as np
import torch

from edgekd.data import DATASETS
from edgekd.data._files import (
    check_channels,
    check_options,
    guess_channels,
    list_images,
    parse_size,
    preprocessing_of,
    split_dirs,
    stack_images,
)
from edgekd.data.base import IGNORE_LABEL, DataBundle, TensorSplit
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig

OPTIONS = ("size", "channels", "num_classes", "class_names", "palette", "train", "eval")


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


def _palette(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value, dtype=np.int64) if isinstance(value, list) else None
    if array is None or array.ndim != 2 or array.shape[1] != 3 or not ((array >= 0) & (array <= 255)).all():
        raise InputError("data.args.palette: expected a list of [r, g, b] (0..255), one per class")
    if len(array) > IGNORE_LABEL:
        raise InputError(f"data.args.palette: at most {IGNORE_LABEL} classes")
    return array


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


@DATASETS.register("seg_folder")
def build_seg_folder(cfg: DataConfig) -> DataBundle:
    """Image/mask PNG pairs in ``ROOT/{train,val}/{images,masks}/``, matched by file stem."""
    args = cfg.args
    check_options(args, OPTIONS, "seg_folder")
    train_dir, eval_dir = split_dirs(cfg.root, args, "seg_folder")
    size = parse_size(args.get("size"))
    palette = _palette(args.get("palette"))
    channels = check_channels(args.get("channels"))
    splits = {}
    for split, directory, limit in (
        ("train", train_dir, cfg.train_limit),
        ("eval", eval_dir, cfg.eval_limit),
    ):
        images, masks = _pairs(directory)
        images, masks = images[:limit], masks[:limit]
        channels = channels or guess_channels(images[0])
        pixels = stack_images(images, channels, size)
        labels = torch.from_numpy(np.stack([read_mask(m, size, palette) for m in masks]))
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
    num_classes = int(args.get("num_classes") or (len(palette) if palette is not None else found))
    if found > num_classes:
        raise InputError(
            f"seg_folder: masks hold class {found - 1} but data.args.num_classes is {num_classes}"
        )
    names = tuple(str(n) for n in args.get("class_names") or ())
    if names and len(names) != num_classes:
        raise InputError(f"data.args.class_names: {len(names)} names for {num_classes} classes")
    return DataBundle(
        name="seg_folder",
        train=splits["train"],
        eval=splits["eval"],
        num_classes=num_classes,
        preprocessing=preprocessing_of(splits["train"].images),
        class_names=names or tuple(f"class_{i}" for i in range(num_classes)),
        extra={"source": str(Path(cfg.root or "")), "task": "segmentation"},
    )
