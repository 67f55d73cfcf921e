"""Which normalisation a run feeds its models (``data.preprocessing``), and where those numbers came from.

Why declared rather than always measured: a teacher fine-tuned on ImageNet-normalised inputs and evaluated on
inputs normalised with the user's own statistics gets every number after that wrong, silently. The recipe may
name a preset (``imagenet``, ``none``, ``measured``) or give ``{mean, std}``; left out (``null``), the
normalisation follows the teacher when it has a published one (any ``torchvision:`` model: ImageNet's;
``timm:<name>``: its ``pretrained_cfg``), else the shipped dataset's own, else (the folder datasets) it is
measured on a bounded, evenly spaced sample of the training split (at most :data:`MEASURE_SAMPLES` images,
streamed batch by batch: never a float copy of the split).

This sits in the data layer and reads the teacher's *name* only (a recipe string), never a model: ``data``
does not import ``models``.

Recipe::

    data: {name: image_folder, root: /data/parts, preprocessing: imagenet}
    data: {preprocessing: {mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}}
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import torch

from edgekd.data.base import DataBundle, Preprocessing, TensorSplit
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig, PreprocessingSpec

log = logging.getLogger("edgekd")

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision's (and timm's default) normalisation
MEASURE_SAMPLES = 2000  # at most this many training images are decoded to measure mean/std
MEASURE_BATCH = 64


def preset(name: str, channels: int) -> Preprocessing:
    """The ``imagenet`` or ``none`` preset for ``channels``-channel images (``none`` fits any count)."""
    if name == "none":
        return Preprocessing((0.0,) * channels, (1.0,) * channels, "preset", "none", "no normalisation")
    return Preprocessing(*IMAGENET, "preset", name, "ImageNet mean/std")


def preset_name(mean: tuple[float, ...], std: tuple[float, ...]) -> str | None:
    """``imagenet`` or ``none`` when the values are that preset's (to 3 decimals), else ``None``."""
    if all(m == 0.0 for m in mean) and all(s == 1.0 for s in std):
        return "none"
    pairs = zip((*mean, *std), (*IMAGENET[0], *IMAGENET[1]), strict=False)
    if len(mean) == 3 and all(abs(a - b) < 1e-3 for a, b in pairs):
        return "imagenet"
    return None


def teacher_default(teacher: str | None) -> Preprocessing | None:
    """The normalisation a teacher's published weights expect, from its recipe name; ``None`` if it has none.

    ``torchvision:<name>``: ImageNet's (every torchvision classification and segmentation weight uses it);
    ``timm:<name>``: its ``pretrained_cfg`` mean/std (timm is imported here, only for a timm teacher).
    """
    if not teacher:
        return None
    if teacher.startswith("torchvision:"):
        return Preprocessing(
            *IMAGENET, "teacher", "imagenet", f"{teacher}: torchvision's ImageNet normalisation"
        )
    if not teacher.startswith("timm:"):
        return None
    model = teacher.removeprefix("timm:")
    try:
        import timm
    except ImportError:
        raise InputError(
            f"teacher.model.name: {teacher} needs the timm package (pip install 'edgekd[timm]')"
        ) from None
    cfg = timm.get_pretrained_cfg(model)
    if cfg is None or not cfg.mean or not cfg.std:
        log.info("data.preprocessing: timm has no pretrained_cfg for %s; using its ImageNet default", model)
        return Preprocessing(*IMAGENET, "teacher", "imagenet", f"{teacher}: timm's ImageNet default")
    mean, std = tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)
    return Preprocessing(mean, std, "teacher", preset_name(mean, std), f"{teacher}: timm pretrained_cfg")


def measure(data: DataBundle, limit: int = MEASURE_SAMPLES) -> Preprocessing:
    """Per-channel mean/std of ``pixel / 255`` over at most ``limit`` evenly spaced training images.

    Read batch by batch (a streamed split decodes them with its evaluation transform) and summed in float64:
    memory stays one batch whatever the split's size.
    """
    split, channels = data.train, data.in_channels
    count = min(len(split), limit)
    positions = torch.linspace(0, len(split) - 1, count).round().long().unique()
    sums = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    pixels = 0
    for images in _pixel_batches(data, positions):
        sums += images.sum(dim=(0, 2, 3), dtype=torch.float64)
        squares += images.square().sum(dim=(0, 2, 3), dtype=torch.float64)
        pixels += images.numel() // channels
    mean = sums / pixels
    std = (squares / pixels - mean.square()).clamp_min(0.0).sqrt().clamp_min(1e-3)
    return Preprocessing(
        tuple(round(float(v), 4) for v in mean),
        tuple(round(float(v), 4) for v in std),
        "measured",
        None,
        f"measured on {len(positions)} of {len(split)} training images",
    )


def _pixel_batches(data: DataBundle, positions: torch.Tensor) -> Iterator[torch.Tensor]:
    """``pixel / 255`` of the training images at ``positions``, a batch at a time (never a copy of them all)."""
    if isinstance(data.train, TensorSplit):
        for chunk in positions.split(MEASURE_BATCH):
            yield data.train.images[chunk].float().div_(255.0)
        return
    channels = data.in_channels
    raw = Preprocessing((0.0,) * channels, (1.0,) * channels)  # the loader's normalisation leaves pixel / 255
    sample = dataclasses.replace(data, train=data.train.take(positions), preprocessing=raw)
    for images, _ in sample.train_loader(MEASURE_BATCH, augment=False, seed=0, shuffle=False):
        yield images


def resolve(data: DataBundle, declared: str | PreprocessingSpec | None, teacher: str | None) -> Preprocessing:
    """The normalisation ``data`` is served with: ``declared`` (``data.preprocessing``) or the automatic choice.

    Raises:
        InputError: declared values whose channel count is not the images' (one value for all channels is
            fine), or a ``timm:`` teacher without timm installed.
    """
    channels = data.in_channels
    if isinstance(declared, PreprocessingSpec):
        chosen = Preprocessing(
            declared.mean,
            declared.std,
            declared.source,
            preset_name(declared.mean, declared.std),
            declared.detail or "declared in data.preprocessing",
        )
    elif declared == "measured":
        chosen = measure(data)
    elif declared is not None:
        chosen = preset(declared, channels)
    else:
        return _automatic(data, teacher)
    _check_channels(
        chosen, channels, f"data.preprocessing ({declared if isinstance(declared, str) else 'values'})"
    )
    return chosen


def _automatic(data: DataBundle, teacher: str | None) -> Preprocessing:
    """``data.preprocessing: null``: the teacher's published normalisation, the dataset's own, or measured."""
    channels = data.in_channels
    published = teacher_default(teacher)
    if published is not None and len(published.mean) in (1, channels):
        return published
    if published is not None:
        log.info(
            "data.preprocessing: %s expects %d-channel inputs but the images have %d; not using its normalisation",
            teacher,
            len(published.mean),
            channels,
        )
    if data.preprocessing is not None:
        own = data.preprocessing
        return dataclasses.replace(
            own,
            source="dataset",
            preset=preset_name(own.mean, own.std),
            detail=f"{data.name}'s own normalisation",
        )
    return measure(data)


def _check_channels(chosen: Preprocessing, channels: int, where: str) -> None:
    if len(chosen.mean) not in (1, channels):
        raise InputError(
            f"{where}: {len(chosen.mean)} mean/std values but the images have {channels} channel"
            f"{'s' if channels > 1 else ''}; give {channels} value{'s' if channels > 1 else ''} (or one for all)"
        )


def as_spec(chosen: Preprocessing) -> PreprocessingSpec:
    """What a run used, as the ``data.preprocessing`` of its resolved recipe."""
    return PreprocessingSpec(mean=chosen.mean, std=chosen.std, source=chosen.source, detail=chosen.detail)


def resolved_config(cfg: DataConfig, data: DataBundle) -> DataConfig:
    """``cfg`` with ``preprocessing`` replaced by the values ``data`` is served with and their source.

    Why: the resolved recipe a run records (report.json ``recipe``, ``student.pt``) must say what was used, so a
    later ``edgekd export student.pt`` feeds the student the same numbers, measured or not.
    """
    if data.preprocessing is None:
        raise ValueError("resolve the data's preprocessing first (build_data does)")
    return cfg.model_copy(update={"preprocessing": as_spec(data.preprocessing)})


def describe(chosen: Preprocessing) -> str:
    """One log line: the values and where they came from."""
    mean = ", ".join(f"{v:g}" for v in chosen.mean)
    std = ", ".join(f"{v:g}" for v in chosen.std)
    label = chosen.preset if chosen.source == "preset" else chosen.source
    return f"data.preprocessing: {label} ({chosen.detail}): mean [{mean}], std [{std}]"


__all__ = [
    "IMAGENET",
    "MEASURE_SAMPLES",
    "as_spec",
    "measure",
    "preset",
    "resolve",
    "resolved_config",
    "teacher_default",
]
