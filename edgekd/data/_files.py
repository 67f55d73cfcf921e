"""Reading image files into the in-memory uint8 tensors of :class:`~edgekd.data.base.TensorSplit`.

Shared by the folder datasets (``image_folder``, ``seg_folder``). Why load everything up front: the pipeline
serves in-memory tensors with batch-level augmentation (see :mod:`edgekd.data.base`); user datasets that fit
an edge model's input size (a few thousand images of 64–256 px) fit in memory as uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.data.base import Preprocessing
from edgekd.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def parse_size(value: Any, key: str = "data.args.size") -> tuple[int, int] | None:
    """``[H, W]`` or one int (square) from a recipe; ``None`` keeps the files' own size."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise InputError(f"{key}: expected [height, width] or one positive int, got {value!r}")


def check_channels(value: Any) -> int | None:
    if value is None or value in (1, 3):
        return value
    raise InputError(f"data.args.channels: expected 1 (grey) or 3 (RGB), got {value!r}")


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


def split_dirs(root: Path | None, args: dict[str, Any], name: str) -> tuple[Path, Path]:
    """``root/<train>`` and ``root/<eval>`` (``data.args.train``/``eval``, default ``train``/``val``)."""
    if root is None:
        raise InputError(f"data.root: {name} needs the dataset directory")
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data.root: {root} is not a directory")
    dirs = []
    for key, default in (("train", "train"), ("eval", "val")):
        sub = root / str(args.get(key, default))
        if not sub.is_dir():
            raise InputError(
                f"{name}: {sub} not found; expected {root}/<split>/ for splits '{args.get('train', 'train')}' "
                f"and '{args.get('eval', 'val')}' (set data.args.train / data.args.eval to rename them)"
            )
        dirs.append(sub)
    return dirs[0], dirs[1]


def check_options(args: dict[str, Any], allowed: Sequence[str], name: str) -> None:
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise InputError(f"data.args: {name} has no option '{unknown[0]}' (options: {', '.join(allowed)})")
