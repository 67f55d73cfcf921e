"""Datasets: a registry of builders, each with typed options (``data.args``) and ``(DataConfig, Params) -> DataBundle``.

Add a dataset by writing one module with a :class:`~edgekd.data.params.DatasetParams` subclass and a
``@register_dataset("name", Params)`` builder, and importing it below (see :mod:`edgekd.data.params`).
"""

from __future__ import annotations

from collections.abc import Callable

from edgekd.data.base import DataBundle, Preprocessing, TensorLoader, TensorSplit
from edgekd.data.params import BuildFn, DatasetBuilder, DatasetParams, P
from edgekd.data.preprocessing import resolved_config
from edgekd.data.stream import FileSplit, StreamLoader
from edgekd.recipe.schema import DataConfig
from edgekd.registry import Registry

DATASETS: Registry[DatasetBuilder] = Registry("dataset")


def register_dataset(name: str, params: type[P]) -> Callable[[BuildFn[P]], BuildFn[P]]:
    """Decorator registering a builder under ``name`` with its options model ``params``; returns the builder."""

    def decorator(build: BuildFn[P]) -> BuildFn[P]:
        DATASETS.register(name)(DatasetBuilder(name, params, build))
        return build

    return decorator


from edgekd.data import fashion_mnist, fashion_scenes, image_folder, seg_folder  # noqa: E402,F401,I001  (registers)
from edgekd.data import synth_eyes  # noqa: E402,F401  (registers)
from edgekd.data.validation import carve_validation  # noqa: E402


def parse_dataset_params(cfg: DataConfig, where: str) -> DatasetParams:
    """``cfg.args`` validated against dataset ``cfg.name``'s ``Params``, without building anything.

    Why separate from :func:`build_data`: the recipe loader calls it right after parsing (``where`` like
    ``"recipe.yaml: data.args"``) so a typo fails before a teacher trains. Raises InputError: an unknown dataset
    name, an unknown option ("did you mean"), a bad value, or options that rule out another ``data`` key.
    """
    return DATASETS.get(cfg.name).parse(cfg, where)


def build_data(cfg: DataConfig, seed: int = 0, teacher: str | None = None) -> DataBundle:
    """Build the dataset a recipe names, with ``data.val`` carved from its training split with ``seed`` (or with
    ``data.val_seed`` when the recipe fixes the carve).

    ``teacher`` is the teacher's recipe name (``teacher.model.name``): with ``data.preprocessing: null`` a
    ``torchvision:``/``timm:`` teacher's published normalisation is used (:mod:`edgekd.data.preprocessing`).
    Raises InputError when the dataset is missing or malformed, ``data.preprocessing`` does not fit its
    channels, or ``data.val`` leaves nothing to train on.
    """
    carve_seed = seed if cfg.val_seed is None else cfg.val_seed
    return carve_validation(DATASETS.get(cfg.name)(cfg, teacher), cfg.val, carve_seed)


__all__ = [
    "DATASETS",
    "DataBundle",
    "DatasetBuilder",
    "DatasetParams",
    "FileSplit",
    "Preprocessing",
    "StreamLoader",
    "TensorLoader",
    "TensorSplit",
    "build_data",
    "parse_dataset_params",
    "register_dataset",
    "resolved_config",
]
