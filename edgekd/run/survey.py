"""What ``edgekd init`` learns before it writes a recipe: the dataset folder's layout and the model's preferences.

Why a survey and not a dataset build: a user's folder may hold tens of thousands of photos, and ``init`` must
answer in a second or two. It lists files and opens a handful of headers (and, for segmentation, a sample of
masks); everything it cannot know cheaply is left to the dataset builder at ``compress`` time, which checks it
again anyway. Why the model's preferences: a fine-tuned torchvision or timm checkpoint expects the input size
and the normalisation it was trained with, and a recipe that guessed them from the data would evaluate and
distil it on inputs it never saw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.data._files import IMAGE_SUFFIXES, guess_channels, list_images  # the folder datasets' own rules
from edgekd.errors import InputError
from edgekd.models import check_model_name

# Evaluation split directory names, most common first; `test` beside `val` makes `val` the validation split.
EVAL_DIRS = ("val", "test", "valid", "validation")
LAYOUTS = (
    "image_folder (ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg) or seg_folder "
    "(ROOT/train/images/*.jpg with ROOT/train/masks/<same stem>.png, the same under ROOT/val/)"
)
MASK_SAMPLE = 200  # masks opened to count segmentation classes
SIZE_SAMPLE = 64  # images whose headers are read to see whether sizes differ
IMAGENET_SIZE = (224, 224)  # torchvision's classification models' published input size
IGNORE_LABEL = 255  # seg_folder: mask pixels that count nowhere


@dataclass(frozen=True)
class FolderSurvey:
    """A dataset folder as ``init`` found it: which registered dataset reads it, and what it holds.

    ``num_classes`` is the count of class directories (``image_folder``) or the largest label + 1 in the masks
    sampled (``seg_folder``, which counts it again over every mask when it loads).
    """

    dataset: str
    task: str
    root: Path
    train: str
    eval: str
    val_dir: str | None
    classes: tuple[str, ...]
    num_classes: int
    counts: tuple[int, int]
    image_size: tuple[int, int]
    sizes_differ: bool
    channels: int


@dataclass(frozen=True)
class ModelPreference:
    """What a model family says about its inputs; ``None`` where it says nothing (the data decides).

    ``channels`` is what its checkpoints were trained on: a torchvision or timm model fine-tuned on grey images
    through their loaders saw them converted to RGB, so the recipe converts them too.

    ``preprocessing`` is a ``data.preprocessing`` value: ``"imagenet"`` or ``{"mean": [...], "std": [...]}``.
    """

    name: str
    family: str
    input_size: tuple[int, int] | None
    channels: int | None
    preprocessing: str | dict[str, list[float]] | None
    task: str | None
    source: str


def survey_folder(root: Path) -> FolderSurvey:
    """Detect ``root``'s layout (``seg_folder`` first, then ``image_folder``) and describe its contents.

    Raises:
        InputError: ``root`` is missing, has no ``train`` split or evaluation split, or matches no layout.
    """
    if not root.is_dir():
        raise InputError(f"--data: {root} is not a directory")
    train = root / "train"
    if not train.is_dir():
        raise InputError(f"--data: {root} has no train/ directory; edgekd init understands {LAYOUTS}")
    eval_dirs = [name for name in EVAL_DIRS if (root / name).is_dir()]
    if not eval_dirs:
        raise InputError(
            f"--data: {root} has train/ but no evaluation split ({', '.join(EVAL_DIRS)}); "
            f"edgekd init understands {LAYOUTS}"
        )
    eval_name = "test" if "test" in eval_dirs else eval_dirs[0]
    val_dir = "val" if eval_name == "test" and "val" in eval_dirs else None
    if (train / "images").is_dir() and (train / "masks").is_dir():
        return _seg_folder(root, eval_name, val_dir)
    return _image_folder(root, eval_name, val_dir)


def _image_folder(root: Path, eval_name: str, val_dir: str | None) -> FolderSurvey:
    classes = sorted(e.name for e in os.scandir(root / "train") if e.is_dir())
    train_files = [f for c in classes for f in _images_under(root / "train" / c)]
    if not train_files:
        raise InputError(f"--data: no images under {root}/train/<class>/; edgekd init understands {LAYOUTS}")
    eval_count = sum(len(_images_under(root / eval_name / c)) for c in classes)
    if eval_count == 0:
        raise InputError(f"--data: no images under {root}/{eval_name}/<class>/ for the classes of train/")
    size, differ = _image_size(train_files)
    return FolderSurvey(
        dataset="image_folder",
        task="classification",
        root=root,
        train="train",
        eval=eval_name,
        val_dir=val_dir,
        classes=tuple(classes),
        num_classes=len(classes),
        counts=(len(train_files), eval_count),
        image_size=size,
        sizes_differ=differ,
        channels=guess_channels(train_files[0]),
    )


def _seg_folder(root: Path, eval_name: str, val_dir: str | None) -> FolderSurvey:
    images = list_images(root / "train" / "images")
    masks = list_images(root / "train" / "masks")
    if not images or not masks:
        raise InputError(f"--data: {root}/train/images/ and {root}/train/masks/ must both hold image files")
    eval_images = root / eval_name / "images"
    if not eval_images.is_dir() or not (root / eval_name / "masks").is_dir():
        raise InputError(f"--data: seg_folder needs {root}/{eval_name}/images/ and {root}/{eval_name}/masks/")
    size, differ = _image_size(images)
    return FolderSurvey(
        dataset="seg_folder",
        task="segmentation",
        root=root,
        train="train",
        eval=eval_name,
        val_dir=val_dir,
        classes=(),
        num_classes=_mask_classes(masks),
        counts=(len(images), len(list_images(eval_images))),
        image_size=size,
        sizes_differ=differ,
        channels=guess_channels(images[0]),
    )


def _images_under(directory: Path) -> list[Path]:
    """Image files anywhere under ``directory``, as torchvision's ImageFolder (and ``image_folder``) finds them."""
    if not directory.is_dir():
        return []
    found = [
        Path(dirpath, name)
        for dirpath, _, names in os.walk(directory, followlinks=True)
        for name in names
        if name.lower().endswith(IMAGE_SUFFIXES)
    ]
    return sorted(found)


def _image_size(files: list[Path]) -> tuple[tuple[int, int], bool]:
    """(height, width) of the first image, and whether any of an evenly spaced sample differs from it."""
    from PIL import Image, UnidentifiedImageError

    step = max(1, len(files) // SIZE_SAMPLE)
    sizes = []
    for path in files[::step][:SIZE_SAMPLE]:
        try:
            with Image.open(path) as img:
                sizes.append((img.height, img.width))
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"--data: {path}: cannot read image ({exc})") from None
    return sizes[0], len(set(sizes)) > 1


def _mask_classes(masks: list[Path]) -> int:
    """Largest label + 1 over an evenly spaced sample of masks (255 = ignore); colour masks are refused."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    step = max(1, len(masks) // MASK_SAMPLE)
    largest = 0
    for path in masks[::step][:MASK_SAMPLE]:
        try:
            with Image.open(path) as img:
                if img.mode in ("RGB", "RGBA"):
                    raise InputError(
                        f"--data: {path} is a colour mask; edgekd init reads masks of class indices (grey or "
                        "palette PNGs); for colour masks write data.args.palette by hand (README: Segmentation)"
                    )
                labels = np.asarray(img)
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"--data: {path}: cannot read mask ({exc})") from None
        labelled = labels[labels != IGNORE_LABEL]
        largest = max(largest, int(labelled.max()) if labelled.size else 0)
    return largest + 1


def model_preference(name: str) -> ModelPreference:
    """The input size, normalisation and task a model name implies (see :class:`ModelPreference`).

    Raises:
        InputError: an unknown model name (with a close match), or ``timm:`` without timm installed.
    """
    check_model_name(name, where="--model")
    family, _, bare = name.partition(":") if ":" in name else ("builtin", "", name)
    if family == "torchvision":
        import torchvision

        segmentation = bare in torchvision.models.list_models(module=torchvision.models.segmentation)
        return ModelPreference(
            name=name,
            family=family,
            input_size=None if segmentation else IMAGENET_SIZE,
            channels=3,  # its ImageFolder loader converts every image to RGB
            preprocessing="imagenet",
            task="segmentation" if segmentation else "classification",
            source="torchvision's ImageNet models",
        )
    if family == "timm":
        return _timm_preference(name, bare)
    return ModelPreference(name, "factory" if ":" in name else "builtin", None, None, None, None, "the data")


def _timm_preference(name: str, bare: str) -> ModelPreference:
    """timm's ``pretrained_cfg`` (input size, mean/std) for ``bare``, read without building or downloading.

    The name was checked against ``timm.list_models()`` already (:func:`check_model_name`); an architecture
    without a pretrained_cfg publishes nothing, so the data decides as for a built-in.
    """
    from edgekd.models.timm_models import import_timm

    cfg: Any = import_timm(name).get_pretrained_cfg(bare)
    if cfg is None or not cfg.input_size or not cfg.mean or not cfg.std:
        return ModelPreference(name, "timm", None, None, None, None, "the data")
    return ModelPreference(
        name=name,
        family="timm",
        input_size=(int(cfg.input_size[1]), int(cfg.input_size[2])),
        channels=int(cfg.input_size[0]),
        preprocessing={"mean": [float(v) for v in cfg.mean], "std": [float(v) for v in cfg.std]},
        task=None,
        source="timm's pretrained_cfg",
    )
