"""Fashion-MNIST (Xiao et al., 2017, arXiv:1708.07747) read from its IDX ``.gz`` files.

Search order: ``data.root`` → ``$EDGEKD_DATA`` (and ``$EDGEKD_DATA/fashion-mnist``) →
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``) → torchvision's
``<root>/FashionMNIST/raw`` layout. With ``data.download: true`` the files are fetched into the first writable
location and verified against their published MD5 sums before use.

Options: none (``data.args`` must be empty); ``data.root``, ``data.download`` and the limits say where and how
much.

Recipe::

    data: {name: fashion_mnist, train_limit: 20000, eval_limit: 5000}
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import urllib.request
from pathlib import Path

import numpy as np
import torch

from edgekd.data import register_dataset
from edgekd.data.base import DataBundle, Preprocessing, TensorSplit
from edgekd.data.params import DatasetParams
from edgekd.errors import EdgekdError, InputError
from edgekd.io import atomic_path
from edgekd.recipe.schema import DataConfig

FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    "eval_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    "eval_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
}
MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Training-set statistics of Fashion-MNIST pixels scaled to [0, 1].
PREPROCESSING = Preprocessing(mean=(0.2860,), std=(0.3530,))


def candidate_dirs(root: Path | None) -> list[Path]:
    """Directories searched for the four IDX files, in order."""
    bases: list[Path] = []
    if root is not None:
        bases.append(Path(root))
    env = os.environ.get("EDGEKD_DATA")
    if env:
        bases += [Path(env), Path(env) / "fashion-mnist"]
    bases.append(SYSTEM_DIR)
    found: list[Path] = []
    for base in bases:
        found += [base, base / "FashionMNIST" / "raw"]
    return found


def find_files(root: Path | None) -> Path | None:
    for directory in candidate_dirs(root):
        if all((directory / fname).is_file() for fname, _ in FILES.values()):
            return directory
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or plain). Raises InputError on a truncated or non-IDX file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise InputError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise InputError(f"{path}: truncated IDX file ({data.size} bytes of {int(np.prod(shape))})")
    return data.reshape(shape)


def download(target: Path) -> Path:
    """Fetch the four files into ``target`` and verify their MD5 sums (the published checksums)."""
    target.mkdir(parents=True, exist_ok=True)
    for fname, md5 in FILES.values():
        dest = target / fname
        if dest.is_file() and _md5(dest) == md5:
            continue
        last_error: Exception | None = None
        for mirror in MIRRORS:
            try:
                with atomic_path(dest) as tmp, urllib.request.urlopen(mirror + fname, timeout=60) as resp:
                    with open(tmp, "wb") as out:
                        shutil.copyfileobj(resp, out)
                    if _md5(tmp) != md5:
                        raise EdgekdError(f"{fname}: checksum mismatch after download from {mirror}")
                break
            except (OSError, EdgekdError) as exc:
                last_error = exc
        else:
            raise EdgekdError(
                f"could not download Fashion-MNIST ({last_error}); install dataset-fashion-mnist"
            )
    return target


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


class FashionMNISTParams(DatasetParams):
    """``data.args`` of ``fashion_mnist``: none; the files are fixed (their MD5 sums are published)."""


@register_dataset("fashion_mnist", FashionMNISTParams)
def build_fashion_mnist(cfg: DataConfig, params: FashionMNISTParams) -> DataBundle:
    """Fashion-MNIST: 60k train / 10k test 28×28 grey images of 10 garment classes."""
    directory = find_files(cfg.root)
    if directory is None and cfg.download:
        directory = download(Path(cfg.root or os.environ.get("EDGEKD_DATA") or "data") / "fashion-mnist")
    if directory is None:
        searched = ", ".join(str(d) for d in candidate_dirs(cfg.root)[::2])
        raise InputError(
            f"Fashion-MNIST not found (searched {searched}); run 'apt-get install dataset-fashion-mnist', "
            "set data.root or $EDGEKD_DATA, or set data.download: true"
        )
    arrays = {key: read_idx(directory / fname) for key, (fname, _) in FILES.items()}
    splits = {}
    for split in ("train", "eval"):
        images = torch.from_numpy(arrays[f"{split}_images"].copy()).unsqueeze(1)
        labels = torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64))
        limit = cfg.train_limit if split == "train" else cfg.eval_limit
        splits[split] = TensorSplit(images, labels).head(limit)
    return DataBundle(
        name="fashion_mnist",
        train=splits["train"],
        eval=splits["eval"],
        num_classes=10,
        preprocessing=PREPROCESSING,
        class_names=CLASS_NAMES,
        extra={"source": str(directory)},
    )
