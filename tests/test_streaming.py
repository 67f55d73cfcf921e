"""Streamed folder datasets (``data.args.stream``): files decoded as batches are served, with the in-memory
loader's contract (order per seed and epoch, shards, indices), the photo transforms, and the same pixels as the
in-memory path where no transform changes them."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.data import FileSplit, TensorSplit, build_data
from edgekd.data.base import IGNORE_LABEL
from edgekd.data.transforms import center_box, random_resized_box
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig
from tests.conftest import cli, sets

SIZE = 32


def write_image_folder(root, per_class: int = 10, eval_per_class: int = 4, size: int = SIZE) -> None:
    """Two classes of noisy colour images: class ``b`` brighter, so a model can tell them apart."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", eval_per_class)):
        for label, cls in enumerate(("a", "b")):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                base = 70 + 110 * label
                pixels = (base + rng.integers(-40, 40, (size, size, 3))).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i:03d}.png")


def write_seg_folder(root, count: int = 8, size: int = SIZE) -> None:
    """Grey images whose brightness is their mask's label times 100 (label 255 on a thin ignored border)."""
    for split, n in (("train", count), ("val", 4)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            mask = np.zeros((size, size), np.uint8)
            mask[4 + i % 5 : 20, 6:26] = 1
            mask[18:28, 10 + i % 3 : 22] = 2
            mask[:, :2] = IGNORE_LABEL
            image = np.where(mask == IGNORE_LABEL, 0, mask.astype(np.int64) * 100).astype(np.uint8)
            Image.fromarray(np.stack([image] * 3, -1)).save(root / split / "images" / f"{i:03d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i:03d}.png")


def folder(root, stream: bool | str, **data) -> DataConfig:
    return DataConfig(name="image_folder", root=root, args={"stream": stream}, **{"val": 0, **data})


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root)
    return root


def test_streamed_split_serves_the_in_memory_pixels_and_reads_nothing_up_front(images):
    memory = build_data(folder(images, False))
    streamed = build_data(folder(images, True))
    assert (
        isinstance(memory.train, TensorSplit) and isinstance(streamed.train, FileSplit) and streamed.streamed
    )
    assert (streamed.in_channels, streamed.input_size) == (3, (SIZE, SIZE))
    assert streamed.preprocessing == memory.preprocessing  # measured on the same images
    assert streamed.eval.images.shape == memory.eval.images.shape  # known without decoding
    for (a, ta), (b, tb) in zip(memory.eval_loader(5), streamed.eval_loader(5), strict=True):
        assert torch.equal(a, b) and torch.equal(ta, tb)
    assert np.array_equal(streamed.eval.head(3).images.numpy(), memory.eval.images[:3].numpy())
    assert torch.equal(streamed.example_input(4), memory.example_input(4))


def test_validation_is_carved_from_the_file_list_as_from_tensors(images):
    memory = build_data(folder(images, False, val=0.25), seed=3)
    streamed = build_data(folder(images, True, val=0.25), seed=3)
    assert isinstance(streamed.val, FileSplit) and (len(streamed.train), len(streamed.val)) == (15, 5)
    assert torch.equal(streamed.val.images[:], memory.val.images)
    assert torch.equal(streamed.train.targets, memory.train.targets)
    assert not set(streamed.val.paths) & set(streamed.train.paths)


def test_loader_order_and_augmentation_follow_seed_and_epoch_and_shards_add_up(images):
    data = build_data(folder(images, True, workers=1))
    loader = data.train_loader(8, augment=True, seed=5)
    first, again = list(loader.indexed()), list(loader.indexed())
    assert len(loader) == len(first) == 3 and sorted(torch.cat([b.indices for b in first]).tolist()) == list(
        range(20)
    )
    assert all(
        torch.equal(a.images, b.images) and torch.equal(a.indices, b.indices)
        for a, b in zip(first, again, strict=True)
    )
    loader.set_epoch(1)
    assert not torch.equal(next(loader.indexed()).images, first[0].images)
    plain = next(data.train_loader(8, augment=False, seed=5).indexed())
    assert torch.equal(plain.indices, first[0].indices) and not torch.equal(plain.images, first[0].images)
    in_process = build_data(folder(images, True, workers=0)).train_loader(8, augment=True, seed=5)
    assert torch.equal(next(in_process.indexed()).images, first[0].images)  # workers change nothing
    ranks = [data.train_loader(8, augment=True, seed=5).shard(r, 2) for r in (0, 1)]
    parts = [list(r.indexed()) for r in ranks]
    assert len(parts[0]) == len(parts[1]) == len(first)
    for step, whole in enumerate(first):
        assert torch.equal(torch.cat([parts[0][step].images, parts[1][step].images]), whole.images)
        assert torch.equal(torch.cat([parts[0][step].indices, parts[1][step].indices]), whole.indices)


def test_crop_boxes_stay_inside_the_image():
    import random

    rng = random.Random(0)
    for width, height in ((32, 32), (640, 120), (50, 900)):
        for _ in range(50):
            left, top, right, bottom = random_resized_box(width, height, rng)
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
    assert center_box(64, 32, (16, 16)) == (16.0, 0.0, 48.0, 32.0)  # cover, then centre crop


def test_seg_masks_follow_their_image_through_crop_and_flip(tmp_path):
    write_seg_folder(tmp_path)
    data = build_data(DataConfig(name="seg_folder", root=tmp_path, val=0, args={"stream": True, "size": 24}))
    assert isinstance(data.train, FileSplit) and data.num_classes == 3 and data.input_size == (24, 24)
    raw = data.train.take(range(len(data.train)))  # un-normalised view: pixels back from the loader
    loader = data.train_loader(4, augment=True, seed=1)
    mean = torch.tensor(data.preprocessing.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.preprocessing.std).view(1, -1, 1, 1)
    agree = total = 0
    for images, masks in loader:
        assert masks.dtype == torch.int64 and masks.shape == (len(images), 24, 24)
        pixels = ((images * std + mean) * 255).round()[:, 0]
        labelled = masks != IGNORE_LABEL
        agree += int(((pixels / 100).round() == masks)[labelled].sum())
        total += int(labelled.sum())
    assert total > 0 and agree / total > 0.97  # only pixels on a label edge may blend
    assert len(raw) == len(data.train)


def test_a_corrupt_file_in_a_worker_is_one_line_naming_it(images, tmp_path):
    write_image_folder(tmp_path)
    broken = tmp_path / "train" / "a" / "003.png"
    broken.write_bytes(b"not a png")
    data = build_data(folder(tmp_path, True, workers=1, preprocessing="none"))
    with pytest.raises(InputError) as err:
        list(data.train_loader(4, augment=False, seed=0))
    assert "\n" not in str(err.value) and "003.png: cannot read image" in str(err.value)


def test_auto_keeps_small_sets_in_memory_and_logs_the_choice(images, caplog):
    with caplog.at_level(logging.INFO, logger="edgekd"):
        data = build_data(folder(images, "auto"))
    assert isinstance(data.train, TensorSplit)
    line = next(r.getMessage() for r in caplog.records if "as uint8" in r.getMessage())
    assert "28 images" in line and "decoding into memory" in line and "stream: auto" in line
    with pytest.raises(InputError, match=r"data\.args\.stream"):
        build_data(folder(images, "sometimes"))


def test_compress_runs_end_to_end_on_a_streamed_folder(images, tmp_path):
    """The whole pipeline on a streamed split: prune calibration, KD, parity, export metadata, report strip."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "task": "classification",
                "data": {
                    "name": "image_folder",
                    "root": str(images),
                    "val": 4,
                    "batch_size": 8,
                    "workers": 1,
                    "args": {"stream": True},
                    "preprocessing": "measured",
                },
                "teacher": {"model": {"name": "resnet20", "args": {"width": 8}}},
                # taylor: calibration batches come through the streamed loader too
                "prune": {"reduction": 0.3, "iterative_steps": 1, "importance": "taylor", "round_to": 2},
                "distill": {"epochs": 1},
            }
        )
    )
    out = tmp_path / "run"
    overrides = sets("profile.threads=[1]", "profile.runs=3", "profile.warmup=1", "export.parity_samples=8")
    done = cli("compress", str(recipe), "--out", str(out), *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    pre = report["input"]["preprocessing"]
    assert pre["source"] == "measured" and pre["detail"] == "measured on 20 of 20 training images"
    assert report["recipe"]["data"]["preprocessing"]["source"] == "measured"
    assert report["recipe"]["data"]["preprocessing"]["mean"] == pre["mean"]
    assert "Normalisation from | measured" in (out / "report.md").read_text()
    assert "Normalisation from" in (out / "report.html").read_text()
