"""Decoding one sample of a streamed folder dataset, with the standard photo transforms.

Training: random-resized crop (torchvision's algorithm: 8–100% of the area, aspect 3/4–4/3, ten tries, then a
centre crop) and a horizontal flip with probability 1/2. Evaluation (and un-augmented training passes): resize
to cover ``size`` keeping the aspect ratio, then centre crop; an image already at ``size`` comes out unchanged,
so a streamed split serves the same pixels as the in-memory one (:func:`edgekd.data._files.stack_images`) when
the files are at the model's size. A segmentation mask goes through the same crop box and flip with
nearest-neighbour resampling (labels are never blended); every box lies inside the image, so no pixel comes
from outside it.

Why crop boxes on PIL images: ``Image.resize(size, box=...)`` crops and resizes in one pass, and
``Image.draft`` lets libjpeg decode a large JPEG at 1/2, 1/4 or 1/8 scale when the crop needs no more pixels
than that: a 12-megapixel photo becomes a 224² input without a full-size decode.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekd.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

Box = tuple[float, float, float, float]  # left, top, right, bottom, in source pixels
CROP_SCALE = (0.08, 1.0)  # fraction of the image area a training crop keeps (torchvision's default)
CROP_RATIO = (3 / 4, 4 / 3)  # aspect ratios (width / height) a training crop may have


def random_resized_box(width: int, height: int, rng: random.Random) -> Box:
    """A random-resized-crop box of a ``width`` × ``height`` image (``RandomResizedCrop.get_params``)."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    ratio = width / height  # fallback: the whole image, clamped to the allowed aspect ratios
    w, h = width, height
    if ratio < CROP_RATIO[0]:
        h = round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        w = round(height * CROP_RATIO[1])
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def center_box(width: int, height: int, size: tuple[int, int]) -> Box:
    """The centred region that, resized to ``size`` (H, W), is "resize to cover, then centre crop"."""
    scale = max(size[1] / width, size[0] / height)
    w, h = size[1] / scale, size[0] / scale
    left, top = (width - w) / 2, (height - h) / 2
    return left, top, left + w, top + h


@dataclass(frozen=True)
class SampleReader:
    """How one sample of a streamed split is decoded: channels, output size and (segmentation) the masks.

    Attributes:
        channels: 1 (grey) or 3 (RGB): what every image is converted to.
        size: (H, W) every image (and mask) comes out at.
        read_mask: Reads one mask file as H×W uint8 class indices at its own size (``seg_folder``'s reader,
            with its palette bound); ``None`` for classification.
    """

    channels: int
    size: tuple[int, int]
    read_mask: Callable[[Path], np.ndarray] | None = None

    def read(
        self, image: Path, mask: Path | None, rng: random.Random | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """C×H×W uint8 image and H×W uint8 mask (or ``None``); ``rng`` draws a training crop and flip, ``None``
        means the evaluation transform."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(image) as img:
                width, height = img.size
                box = random_resized_box(width, height, rng) if rng else center_box(width, height, self.size)
                flip = rng is not None and rng.random() < 0.5
                pixels = self._decode(img, box)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise InputError(f"{image}: cannot read image ({exc})") from None
        labels = None
        if mask is not None and self.read_mask is not None:
            labels = self._mask(self.read_mask(mask), box, (width, height))
        if flip:
            pixels = pixels[:, :, ::-1]
            labels = labels[:, ::-1] if labels is not None else None
        return np.ascontiguousarray(pixels), None if labels is None else np.ascontiguousarray(labels)

    def _decode(self, img: Image.Image, box: Box) -> np.ndarray:
        """``box`` of ``img`` at ``self.size``, converted to ``self.channels``, as C×H×W."""
        from PIL import Image

        out_h, out_w = self.size
        if img.format == "JPEG":  # decode at the smallest 1/2^k scale that still covers the crop's pixels
            factor = min((box[2] - box[0]) / out_w, (box[3] - box[1]) / out_h)
            if factor >= 2:
                full = img.size
                img.draft(img.mode, (math.ceil(full[0] / factor), math.ceil(full[1] / factor)))
                sx, sy = img.size[0] / full[0], img.size[1] / full[1]
                box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        img = img.convert("L" if self.channels == 1 else "RGB")
        array = np.array(img.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box), dtype=np.uint8)
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)

    def _mask(self, labels: np.ndarray, box: Box, image_size: tuple[int, int]) -> np.ndarray:
        """The image's crop ``box`` of a label map (scaled when the mask's size differs), nearest-neighbour."""
        from PIL import Image

        sx, sy = labels.shape[1] / image_size[0], labels.shape[0] / image_size[1]
        scaled = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        out = Image.fromarray(labels).resize(
            (self.size[1], self.size[0]), Image.Resampling.NEAREST, box=scaled
        )
        return np.array(out, dtype=np.uint8)
