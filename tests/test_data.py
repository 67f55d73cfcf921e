"""Fashion-MNIST from its real IDX files; search order, limits, augmentation and clear errors."""

from __future__ import annotations

import gzip

import pytest
import torch

from edgekd.data import build_data, fashion_mnist
from edgekd.data.base import augment_batch
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig


def test_reads_real_files_with_limits(small_data):
    assert len(small_data.train) == 1024 and len(small_data.eval) == 512
    assert small_data.input_size == (28, 28) and small_data.in_channels == 1 and small_data.num_classes == 10
    assert small_data.train.images.dtype == torch.uint8
    assert set(small_data.eval.targets.unique().tolist()) <= set(range(10))


def test_loader_normalises_and_is_repeatable(small_data):
    loader = small_data.train_loader(256, augment=True, seed=3)
    loader.set_epoch(1)
    first = [x for x, _ in loader]
    loader.set_epoch(1)
    again = [x for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    full = torch.cat([x for x, _ in small_data.train_loader(1024, augment=False, seed=0, shuffle=False)])
    assert abs(float(full.mean())) < 0.2 and 0.8 < float(full.std()) < 1.2


def test_augmentation_crops_and_flips_without_changing_shape():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    out = augment_batch(images, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == images.shape and out.dtype == images.dtype
    same = augment_batch(images, torch.Generator().manual_seed(0), pad=0)
    assert all(torch.equal(s, i) or torch.equal(s, i.flip(-1)) for s, i in zip(same, images, strict=True))


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "none")
    monkeypatch.delenv("EDGEKD_DATA", raising=False)
    with pytest.raises(InputError, match="apt-get install dataset-fashion-mnist"):
        build_data(DataConfig(root=tmp_path))


def test_truncated_idx_file_is_rejected(tmp_path):
    src = fashion_mnist.SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(src.read_bytes())
    bad = tmp_path / "labels.gz"
    bad.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(InputError, match="truncated"):
        fashion_mnist.read_idx(bad)


def test_non_idx_file_is_rejected(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"hello world"))
    with pytest.raises(InputError, match="not an unsigned-byte IDX"):
        fashion_mnist.read_idx(bad)


def test_torchvision_layout_is_found(tmp_path, monkeypatch):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for fname, _ in fashion_mnist.FILES.values():
        (raw / fname).symlink_to(fashion_mnist.SYSTEM_DIR / fname)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "none")
    bundle = build_data(DataConfig(root=tmp_path, train_limit=10, eval_limit=10))
    assert bundle.extra["source"] == str(raw)
