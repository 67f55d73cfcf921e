"""Datasets: a registry of builders ``(DataConfig) -> DataBundle``.

Add a dataset by writing one module with a ``@DATASETS.register("name")`` builder and importing it below.
"""

from __future__ import annotations

from edgekd.data.base import DataBundle, Preprocessing, TensorLoader, TensorSplit
from edgekd.recipe.schema import DataConfig
from edgekd.registry import Registry

DATASETS: Registry = Registry("dataset")

from edgekd.data import fashion_mnist, fashion_scenes, image_folder, seg_folder  # noqa: E402,F401,I001  (registers)
from edgekd.data import synth_eyes  # noqa: E402,F401  (registers)


def build_data(cfg: DataConfig) -> DataBundle:
    """Build the dataset a recipe names (raises InputError when it is missing or malformed)."""
    return DATASETS.get(cfg.name)(cfg)


__all__ = ["DATASETS", "DataBundle", "Preprocessing", "TensorLoader", "TensorSplit", "build_data"]
