"""Reading image files into the in-memory uint8 tensors of :class:`~edgekd.data.base.TensorSplit`.

Shared by the folder datasets (``image_folder``, ``seg_folder``). Why load everything up front: the pipeline
serves in-memory tensors with batch-level augmentation (see :mod:`edgekd.data.base`); user datasets that fit
an edge model's input size (a few thousand images of 64–256 px) fit in memory as uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from edgekd.data.base import Preprocessing
from edgekd.data.params import Channels, DatasetParams, Size
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class FolderParams(DatasetParams):
    """Options every folder dataset takes: how to read the files and where the two splits are."""

    reads_val_directory: ClassVar[bool] = True  # ``data.val: <dir>`` names a split directory

    size: Size | None = Field(
        None, description="[height, width] (or one int) to resize to; needed when files differ in size."
    )
    channels: Channels | None = Field(None, description="1 (grey) or 3 (RGB); default: from the first image.")
    train: str = Field(
        "train", min_length=1, description="Directory under data.root holding the training split."
    )
    eval: str = Field(
        "val", min_length=1, description="Directory under data.root holding the evaluation split."
    )


def list_images(directory: Path) -> list[Path]:
    """Image files directly in ``directory``, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """H×W×C uint8 of one image file, converted to ``channels`` and resized (bilinear) to ``size``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None
    return array[..., None] if array.ndim == 2 else array


def guess_channels(path: Path) -> int:
    """1 for grey-scale files (modes L, LA, I, I;16, 1), 3 otherwise."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return 1 if img.mode in ("L", "LA", "I", "I;16", "1") else 3
    except OSError as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None


def stack_images(paths: Sequence[Path], channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    """N×C×H×W uint8 of ``paths``; files of different sizes need ``size`` (the message says so)."""
    arrays = [read_image(p, channels, size) for p in paths]
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1:
        raise InputError(
            f"images have different sizes ({', '.join(str(s) for s in sorted(shapes)[:3])}); set "
            "data.args.size: [height, width] to resize them"
        )
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def preprocessing_of(images: torch.Tensor) -> Preprocessing:
    """Per-channel mean/std of a uint8 N×C×H×W training split, scaled to [0, 1]."""
    x = images.float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return Preprocessing(
        mean=tuple(round(float(v), 4) for v in mean), std=tuple(round(float(v), 4) for v in std)
    )


def folder_splits(cfg: DataConfig, params: FolderParams, name: str) -> list[tuple[str, Path, int | None]]:
    """``(split, directory, limit)`` of each split a folder dataset reads, training split first.

    ``root/<train>`` and ``root/<eval>`` (``data.args.train``/``eval``, default ``train``/``val``), plus
    ``root/<data.val>`` as the validation split when ``data.val`` names a directory.
    """
    if cfg.root is None:
        raise InputError(f"data.root: {name} needs the dataset directory")
    root = Path(cfg.root)
    if not root.is_dir():
        raise InputError(f"data.root: {root} is not a directory")
    splits = [("train", root / params.train, cfg.train_limit), ("eval", root / params.eval, cfg.eval_limit)]
    for _, sub, _ in splits:
        if not sub.is_dir():
            raise InputError(
                f"{name}: {sub} not found; expected {root}/<split>/ for splits '{params.train}' "
                f"and '{params.eval}' (set data.args.train / data.args.eval to rename them)"
            )
    if isinstance(cfg.val, str):
        sub = root / cfg.val
        if not sub.is_dir():
            raise InputError(
                f"data.val: {sub} not found; name a directory under {root} laid out like '{params.eval}'"
            )
        if cfg.val in (params.train, params.eval):
            raise InputError(
                f"data.val: '{cfg.val}' is the {'training' if cfg.val == params.train else 'eval (test)'} "
                "split; name a directory of its own, or give a fraction to carve from the training split"
            )
        splits.append(("val", sub, None))
    return splits
