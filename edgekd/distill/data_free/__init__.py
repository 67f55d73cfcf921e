"""Data-free distillation: the student's batches are synthesised from the teacher, no training image is read.

A method is one module here: a :class:`~edgekd.distill.data_free.base.Synthesizer` subclass registered with
``@SYNTHESIZERS.register`` and imported below. :class:`~edgekd.distill.data_free.source.SyntheticBatches`
turns any of them into the batch source :func:`edgekd.engine.trainer.fit` trains on (``FitOptions.batches``),
with a memory bank of past samples and its whole state in the epoch checkpoint.
"""

from __future__ import annotations

from edgekd.registry import Registry

SYNTHESIZERS: Registry = Registry("data-free method")

from edgekd.distill.data_free import dafl, deepinversion, dfad, two_generators  # noqa: E402,F401,I001  (registers)
from edgekd.distill.data_free.source import (  # noqa: E402
    SyntheticBatches,
    build_synthetic_batches,
    check_data_free,
)

from edgekd.distill.data_free import record  # noqa: E402

__all__ = ["SYNTHESIZERS", "SyntheticBatches", "build_synthetic_batches", "check_data_free", "record"]
