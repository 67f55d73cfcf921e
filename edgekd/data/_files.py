"""What the folder datasets (``image_folder``, ``seg_folder``) share: options, split discovery, and the choice
between decoding every file up front and streaming them.

Why two paths: a few thousand small images are fastest served as one in-memory uint8 tensor with batch-level
augmentation (:mod:`edgekd.data.base`); a folder of tens of thousands of photos does not fit in memory and is
streamed through DataLoader workers (:mod:`edgekd.data.stream`). :func:`stream_choice` picks by the split's
size as uint8 (``data.args.stream: auto``, the default; ``true``/``false`` force it) and logs the choice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from edgekd.data.params import Channels, DatasetParams, Size
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig

log = logging.getLogger("edgekd")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# ``stream: auto`` streams when the splits would take more than this as decoded uint8 pixels (~7,000 RGB 224²
# images): below it, in-memory batches are faster; above it, memory would grow with the dataset.
STREAM_THRESHOLD_BYTES = 1 << 30


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
    stream: Literal["auto"] | bool = Field(
        "auto",
        description=(
            "true: decode files as batches are served (DataLoader with data.workers; random-resized crop + flip "
            "for training, resize + centre crop for evaluation); false: decode every file into memory up front; "
            f"auto: stream when the splits exceed {STREAM_THRESHOLD_BYTES >> 30} GiB as uint8."
        ),
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


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, read from its header (nothing is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None


def stream_choice(
    name: str, cfg: DataConfig, params: FolderParams, splits: Sequence[Sequence[Path]], channels: int
) -> tuple[bool, tuple[int, int]]:
    """Whether to stream the ``splits`` (image paths of each, training first), and the (H, W) they are served at.

    ``stream: auto`` streams when the splits would exceed :data:`STREAM_THRESHOLD_BYTES` as uint8. The size is
    ``data.args.size``, else the first training image's. Logs the choice in one line.
    """
    size = params.size or image_size(splits[0][0])
    count = sum(len(paths) for paths in splits)
    total = count * channels * size[0] * size[1]
    stream = total > STREAM_THRESHOLD_BYTES if params.stream == "auto" else bool(params.stream)
    if stream:
        how = f"streaming from disk with {cfg.workers or 'no'} DataLoader worker{'s' * (cfg.workers != 1)}"
        how += " (data.workers)" if cfg.workers else " (set data.workers to decode in parallel)"
    else:
        how = "decoding into memory"
    limit = f", {'over' if total > STREAM_THRESHOLD_BYTES else 'under'} {_bytes(STREAM_THRESHOLD_BYTES)}"
    log.info(
        "%s: %d images ≈ %s as uint8 at %d×%d×%d%s: %s (data.args.stream: %s)",
        name,
        count,
        _bytes(total),
        channels,
        *size,
        limit if params.stream == "auto" else "",
        how,
        str(params.stream).lower(),
    )
    return stream, size


def _bytes(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


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
