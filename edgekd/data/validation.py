"""The validation split: carved from the training split so that nothing is ever selected on the test split.

Why: choosing the best epoch, an early stop or a default by its accuracy on the split whose accuracy is then
reported makes the reported number optimistic by selection, and the user cannot tell (the held-out set stops
being held out). ``data.val`` carves a random subset of the training split with the run's seed; the eval split
is evaluated once per artifact and reported as the test metric.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from edgekd.data.base import DataBundle
from edgekd.errors import InputError
from edgekd.recipe.schema import VAL_FRACTION_CAP

log = logging.getLogger("edgekd")


def validation_size(val: float | int | str | None, train_size: int) -> int:
    """How many training samples ``data.val`` sets aside (0: no validation split).

    A fraction is capped at :data:`VAL_FRACTION_CAP` samples; an explicit count is taken as given.

    Raises:
        InputError: the split would leave no training sample.
    """
    if val is None or isinstance(val, str):
        return 0
    count = min(round(val * train_size), VAL_FRACTION_CAP) if isinstance(val, float) else int(val)
    if isinstance(val, float) and val > 0:
        count = max(1, count)
    if count >= train_size:
        raise InputError(
            f"data.val: {val} sets aside {count} of {train_size} training samples, leaving none to train on; "
            "use a smaller value or raise data.train_limit"
        )
    return count


def carve_validation(data: DataBundle, val: float | int | str | None, seed: int) -> DataBundle:
    """``data`` with ``val`` carved out of its training split, chosen at random with ``seed``.

    The remaining training samples keep their order, and the same (``train`` split, ``val``, ``seed``) always
    carves the same samples, so a resumed or distributed run trains on the same split. A bundle whose builder
    already read a validation directory is returned unchanged. Works on in-memory and streamed splits alike
    (``split.take``: a streamed split only splits its list of files).
    """
    count = validation_size(val, len(data.train)) if data.val is None else 0
    if count == 0:
        return data
    gen = torch.Generator().manual_seed(seed * 7919 + 17)  # its own stream: not the training order's
    chosen = torch.zeros(len(data.train), dtype=torch.bool)
    chosen[torch.randperm(len(data.train), generator=gen)[:count]] = True
    train = data.train
    log.debug("data.val: %d of %d training samples set aside for validation", count, len(train))
    return dataclasses.replace(
        data,
        train=train.take(torch.nonzero(~chosen).flatten()),
        val=train.take(torch.nonzero(chosen).flatten()),
    )
