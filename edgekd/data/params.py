"""The dataset contract: typed ``data.args`` (a pydantic ``Params`` model) and a builder that receives them.

Why typed options: ``data.args`` used to be a raw dict that each builder checked its own way, and only once
the dataset was being built. A ``Params`` model per dataset gives one check (unknown keys answered with "did
you mean", bad values with the key path), which the recipe loader can run before any work starts and which
``edgekd schema``-style listings can read (defaults, descriptions).

A dataset module declares its options and registers its builder::

    class EyesParams(DatasetParams):
        size: Size = Field((36, 60), description="[H, W] of the crops, or one int for squares.")

    @register_dataset("eyes", EyesParams)
    def build_eyes(cfg: DataConfig, params: EyesParams) -> DataBundle: ...

Every option has a default (a dataset with no ``data.args`` builds) and a description, and the module docstring
names every option: ``tests/test_data.py`` checks all three for every registered dataset. Options that rule out
another ``data`` key (``synth_eyes``' gaze target and ``augment``) override :meth:`DatasetParams.conflicts`.
``DATASETS.get(name)`` is a :class:`DatasetBuilder`: ``.Params`` (as ``LOSSES.get(name).Params``), ``.parse``
and ``.build``; calling it parses and builds.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

from edgekd.data.base import DataBundle
from edgekd.data.preprocessing import describe, resolve
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig
from edgekd.recipe.validation import validate_params
from edgekd.registry import did_you_mean

log = logging.getLogger("edgekd")


class DatasetParams(BaseModel):
    """Base of every dataset's ``data.args``: unknown keys are errors, values are immutable once parsed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Whether ``data.val`` may name a directory (folder datasets); the others carve a fraction or a count.
    reads_val_directory: ClassVar[bool] = False

    def conflicts(self, cfg: DataConfig) -> dict[str, str]:
        """Other ``data`` keys (``augment``, ...) that these options rule out, as ``{key: why}``.

        Why a hook: some options constrain the rest of the data section (a gaze dataset cannot be flipped);
        reporting that at recipe load needs the dataset to say so without being built. None by default.
        """
        return {}


P = TypeVar("P", bound=DatasetParams)
BuildFn = Callable[[DataConfig, P], DataBundle]  # BuildFn[MyParams]: a builder taking those options


def as_pair(value: Any) -> Any:
    """One int stands for the pair ``[value, value]`` (a square size, a fixed count)."""
    return [value, value] if isinstance(value, int) and not isinstance(value, bool) else value


PositiveInt = Annotated[int, Strict(), Field(ge=1)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
# Two positive ints, or one int for both (YAML ``[36, 60]`` or ``64``): a size [H, W], a [min, max] range.
Pair = Annotated[tuple[PositiveInt, PositiveInt], BeforeValidator(as_pair)]
Size = Pair  # [H, W] in pixels, or one int for a square
Channels = Literal[1, 3]


@dataclass(frozen=True)
class DatasetBuilder(Generic[P]):
    """A registered dataset: its ``Params`` model and the function building it from checked options.

    Calling it with a :class:`DataConfig` validates ``cfg.args`` (as ``data.args``) and builds, so the Python API
    refuses a typo just as a recipe does.
    """

    name: str
    Params: type[P]
    build: BuildFn[P]

    def parse(self, cfg: DataConfig, where: str = "data.args") -> P:
        """``cfg.args`` as this dataset's ``Params``; InputError (prefixed with ``where``) on any problem."""
        options = sorted(self.Params.model_fields)
        for key in cfg.args:
            if str(key) not in options:
                raise InputError(_unknown_option(where, self.name, str(key), options))
        params = validate_params(self.Params, cfg.args, where)
        if isinstance(cfg.val, str) and not self.Params.reads_val_directory:
            raise InputError(
                f"{where.removesuffix('.args')}.val: '{cfg.val}' names a directory, which only folder datasets "
                f"read; {self.name} carves its validation split: give a fraction (0.1) or a count (5000)"
            )
        conflicts = params.conflicts(cfg)
        if conflicts:
            key, why = next(iter(conflicts.items()))
            raise InputError(
                f"{where.removesuffix('.args')}.{key}: {why}"
            )  # e.g. "recipe.yaml: data.augment"
        return params

    def __call__(self, cfg: DataConfig, teacher: str | None = None) -> DataBundle:
        """The dataset with its normalisation resolved (``cfg.preprocessing``; ``teacher``: the teacher's
        recipe name, whose published normalisation the automatic choice follows)."""
        data = self.build(cfg, self.parse(cfg))
        chosen = resolve(data, cfg.preprocessing, teacher)
        # said aloud only when edgekd chose on the user's behalf (the teacher's published values, or measured);
        # a shipped dataset's own values or a declared preset are what the recipe says: debug detail
        level = logging.INFO if chosen.source in ("teacher", "measured") else logging.DEBUG
        log.log(level, "%s", describe(chosen))
        return dataclasses.replace(data, preprocessing=chosen)


def _unknown_option(where: str, dataset: str, key: str, options: list[str]) -> str:
    """The message for a key ``dataset`` does not take, with the closest option and the list of all."""
    listing = f"options: {', '.join(options)}" if options else f"{dataset} takes no data.args"
    return f"{where}.{key}: {dataset} has no option '{key}'{did_you_mean(key, options)} ({listing})"
