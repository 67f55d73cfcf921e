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

Recipe::

    data:
      name: fashion_scenes
      args: {canvas: 64, garments: [2, 4], train_scenes: 12000, eval_scenes: 2000, seed: 0}
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.data import DATASETS
from edgekd.data.base import DataBundle, Preprocessing, TensorSplit
from edgekd.data.fashion_mnist import CLASS_NAMES, FILES, download, find_files, read_idx
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig

DEFAULTS: dict[str, Any] = {
    "canvas": 64,
    "garments": [2, 4],
    "train_scenes": 12000,
    "eval_scenes": 2000,
    "threshold": 24,
    "background": 40,
    "seed": 0,
}
GARMENT = 28  # Fashion-MNIST images are 28×28


def _options(args: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(args) - set(DEFAULTS))
    if unknown:
        raise InputError(
            f"data.args: fashion_scenes has no option '{unknown[0]}' (options: {', '.join(DEFAULTS)})"
        )
    opts = {**DEFAULTS, **args}
    for key in ("canvas", "train_scenes", "eval_scenes", "threshold", "background", "seed"):
        if not isinstance(opts[key], int) or isinstance(opts[key], bool) or opts[key] < 0:
            raise InputError(f"data.args.{key}: expected a non-negative integer, got {opts[key]!r}")
    garments = opts["garments"]
    if isinstance(garments, int) and not isinstance(garments, bool):
        garments = [garments, garments]
    if (
        not isinstance(garments, list | tuple)
        or len(garments) != 2
        or not all(isinstance(g, int) and g >= 1 for g in garments)
        or garments[0] > garments[1]
    ):
        raise InputError(f"data.args.garments: expected [min, max] with 1 <= min <= max, got {garments!r}")
    opts["garments"] = (int(garments[0]), int(garments[1]))
    if opts["canvas"] < GARMENT:
        raise InputError(f"data.args.canvas: must be at least {GARMENT} (one garment), got {opts['canvas']}")
    if opts["threshold"] > 254 or opts["background"] > 255:
        raise InputError("data.args: threshold must be <= 254 and background <= 255")
    return opts


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


@DATASETS.register("fashion_scenes")
def build_fashion_scenes(cfg: DataConfig) -> DataBundle:
    """Segmentation scenes of real Fashion-MNIST garments: background + 10 classes, deterministic per seed."""
    opts = _options(cfg.args)
    directory = find_files(cfg.root)
    if directory is None and cfg.download:
        directory = download(Path(cfg.root or os.environ.get("EDGEKD_DATA") or "data") / "fashion-mnist")
    if directory is None:
        raise InputError(
            "fashion_scenes needs Fashion-MNIST, which was not found; run 'apt-get install "
            "dataset-fashion-mnist', set data.root or $EDGEKD_DATA, or set data.download: true"
        )
    splits = {}
    for index, split in enumerate(("train", "eval")):
        garments, labels = _garments(directory, split)
        limit = cfg.train_limit if split == "train" else cfg.eval_limit
        count = opts[f"{split}_scenes"] if limit is None else min(limit, opts[f"{split}_scenes"])
        if count < 1:
            raise InputError(f"data.args.{split}_scenes: must be at least 1")
        rng = np.random.default_rng([opts["seed"], index])
        images, masks = compose_scenes(
            garments,
            labels,
            count,
            rng,
            opts["canvas"],
            opts["garments"],
            opts["threshold"],
            opts["background"],
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
