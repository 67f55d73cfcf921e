"""``fashion_scenes``: semantic segmentation scenes composited from real Fashion-MNIST garments.

Each scene is a ``canvas``×``canvas`` grey image holding ``garments`` (a random count in ``[min, max]``) real
Fashion-MNIST images pasted at random positions, later ones occluding earlier ones, over a smooth noisy
background. The mask labels every pixel with its garment's class + 1 (background is 0): 11 classes. A
garment's silhouette is its pixels brighter than ``threshold``, so dark interior pixels of a garment belong
to the background, exactly as a person labelling by hand would have to decide them too.

Why this dataset: the garments are real photographs (Xiao et al., 2017), and telling a shirt from a pullover
or a coat *per pixel*, across occlusions and with a background that overlaps the garments' darkest shades, is a
task where a pruned student visibly loses accuracy and distillation has something to recover. Training
scenes use only Fashion-MNIST's training images and evaluation scenes only its test images.

Determinism: scenes are drawn one after another from ``numpy.random.default_rng([seed, split])``, so scene
``i`` is the same for every ``train_limit``/``eval_limit`` (a limit generates only the first scenes).

Options (``data.args``, :class:`FashionScenesParams`): ``canvas`` (scene side, >= 28; default 64), ``garments``
([min, max] per scene; default [2, 4]), ``train_scenes`` / ``eval_scenes`` (12000 / 2000), ``threshold``
(silhouette cut, 0..254; default 24), ``background`` (brightest background value, 0..255; default 40), ``seed``.

Recipe::

    data:
      name: fashion_scenes
      args: {canvas: 64, garments: [2, 4], train_scenes: 12000, eval_scenes: 2000, seed: 0}
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import AfterValidator, Field

from edgekd.data import register_dataset
from edgekd.data.base import DataBundle, Preprocessing, TensorSplit
from edgekd.data.fashion_mnist import CLASS_NAMES, FILES, download, find_files, read_idx
from edgekd.data.params import DatasetParams, NonNegativeInt, Pair, PositiveInt
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig

GARMENT = 28  # Fashion-MNIST images are 28×28


def _ordered(value: tuple[int, int]) -> tuple[int, int]:
    if value[0] > value[1]:
        raise ValueError(f"expected [min, max] with min <= max, not {list(value)}")
    return value


class FashionScenesParams(DatasetParams):
    """``data.args`` of ``fashion_scenes``: scene size, crowding, how many scenes, and their seed."""

    canvas: int = Field(64, strict=True, ge=GARMENT, description="Scene side in pixels (>= 28, one garment).")
    garments: Annotated[Pair, AfterValidator(_ordered)] = Field(
        (2, 4), description="[min, max] garments per scene (or one int for a fixed count), min >= 1."
    )
    train_scenes: PositiveInt = Field(12000, description="Training scenes (train_limit generates fewer).")
    eval_scenes: PositiveInt = Field(2000, description="Evaluation scenes (eval_limit generates fewer).")
    threshold: int = Field(
        24, strict=True, ge=0, le=254, description="A garment's silhouette: its pixels brighter than this."
    )
    background: int = Field(40, strict=True, ge=0, le=255, description="Brightest background pixel value.")
    seed: NonNegativeInt = Field(0, description="Seeds the scenes: the same seed gives the same scenes.")


def compose_scenes(
    garments: np.ndarray,
    labels: np.ndarray,
    count: int,
    rng: np.random.Generator,
    canvas: int = 64,
    per_scene: tuple[int, int] = (2, 4),
    threshold: int = 24,
    background: int = 40,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` scenes from ``garments`` (K×28×28 uint8) with ``labels`` (K class indices).

    Returns:
        ``(images, masks)``: N×canvas×canvas uint8 each; mask values are 0 (background) or class + 1.
    """
    images = np.empty((count, canvas, canvas), dtype=np.uint8)
    masks = np.zeros((count, canvas, canvas), dtype=np.uint8)
    span = canvas - GARMENT + 1
    coarse = max(2, canvas // 8)
    for i in range(count):
        # smooth background: a coarse random grid upsampled, plus fine noise, within [0, background]
        grid = rng.random((coarse, coarse))
        smooth = np.kron(grid, np.ones((canvas // coarse + 1, canvas // coarse + 1)))[:canvas, :canvas]
        noise = rng.random((canvas, canvas))
        images[i] = (background * (0.7 * smooth + 0.3 * noise)).astype(np.uint8)
        n = int(rng.integers(per_scene[0], per_scene[1] + 1))
        picks = rng.integers(0, len(garments), n)
        ys, xs = rng.integers(0, span, n), rng.integers(0, span, n)
        flips = rng.random(n) < 0.5
        for k, y, x, flip in zip(picks, ys, xs, flips, strict=True):
            garment = garments[k][:, ::-1] if flip else garments[k]
            silhouette = garment > threshold
            window = (slice(y, y + GARMENT), slice(x, x + GARMENT))
            images[i][window][silhouette] = garment[silhouette]
            masks[i][window][silhouette] = labels[k] + 1
    return images, masks


@functools.lru_cache(maxsize=2)
def _garments(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images and labels of one split (cached: decompressing 60k images takes about a second)."""
    images = read_idx(directory / FILES[f"{split}_images"][0])
    labels = read_idx(directory / FILES[f"{split}_labels"][0]).astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@register_dataset("fashion_scenes", FashionScenesParams)
def build_fashion_scenes(cfg: DataConfig, params: FashionScenesParams) -> DataBundle:
    """Segmentation scenes of real Fashion-MNIST garments: background + 10 classes, deterministic per seed."""
    directory = find_files(cfg.root)
    if directory is None and cfg.download:
        directory = download(Path(cfg.root or os.environ.get("EDGEKD_DATA") or "data") / "fashion-mnist")
    if directory is None:
        raise InputError(
            "fashion_scenes needs Fashion-MNIST, which was not found; run 'apt-get install "
            "dataset-fashion-mnist', set data.root or $EDGEKD_DATA, or set data.download: true"
        )
    splits = {}
    for index, (split, scenes, limit) in enumerate(
        (("train", params.train_scenes, cfg.train_limit), ("eval", params.eval_scenes, cfg.eval_limit))
    ):
        garments, labels = _garments(directory, split)
        count = scenes if limit is None else min(limit, scenes)
        rng = np.random.default_rng([params.seed, index])
        images, masks = compose_scenes(
            garments,
            labels,
            count,
            rng,
            params.canvas,
            params.garments,
            params.threshold,
            params.background,
        )
        splits[split] = TensorSplit(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(masks))
    return DataBundle(
        name="fashion_scenes",
        train=splits["train"],
        eval=splits["eval"],
        num_classes=11,
        preprocessing=Preprocessing(mean=(0.196,), std=(0.256,)),  # default scenes, train split
        class_names=("background", *CLASS_NAMES),
        extra={"source": str(directory), "task": "segmentation"},
    )
