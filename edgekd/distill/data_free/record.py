"""What a data-free run reads, and what it leaves for the report: the record and the sample grid.

Why no validation split: ``data.val`` is carved from the training split, and a data-free run reads no training
image, so it selects nothing and keeps the last epoch (the trainer does that when the bundle has no validation
split). The recipe loader refuses a carved ``data.val`` with ``distill.data_free``; :func:`training_view` drops
one anyway for callers that build a context by hand. A validation *directory* (folder datasets) is a separate
labelled hold-out and is kept.
The eval (test) split is still read: evaluation stays real.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from edgekd.context import RunContext  # noqa: E402
from edgekd.data.base import DataBundle, Preprocessing  # noqa: E402
from edgekd.distill.data_free.source import SyntheticBatches  # noqa: E402
from edgekd.io import atomic_path  # noqa: E402
from edgekd.report.samples import SYNTHETIC_PLOT  # noqa: E402  (the report shows it when present)
from edgekd.results import DataFreeRecord  # noqa: E402

log = logging.getLogger("edgekd")


def training_view(ctx: RunContext) -> DataBundle:
    """``ctx.data`` as a data-free fit sees it: no validation split carved from the training split."""
    data = ctx.data
    if data.val is not None and not isinstance(ctx.recipe.data.val, str):
        log.info("distill: data-free, so no validation split from training images: the last epoch is kept")
        data = dataclasses.replace(data, val=None)
    return data


def finish(ctx: RunContext, batches: SyntheticBatches) -> DataFreeRecord:
    """Log and record the synthesis budget spent, and draw ``plots/synthetic.png`` from the last samples."""
    record = DataFreeRecord(method=batches.method, synthetic_samples=batches.samples, seconds=batches.seconds)
    log.info(
        "distill: no training images used; %s synthesised %d samples in %.1fs",
        record.method,
        record.synthetic_samples,
        record.seconds,
    )
    images = batches.preview(64).detach().cpu()
    if len(images):
        write_sample_grid(ctx.run.plots / SYNTHETIC_PLOT, images, ctx.data.preprocessing)
    batches.close()
    return record


def write_sample_grid(path: Path, images: torch.Tensor, preprocessing: Preprocessing) -> Path:
    """A square grid of synthetic images (N×C×H×W, normalised), de-normalised to pixels, as one PNG."""
    channels = images.shape[1]
    mean = torch.tensor(preprocessing.mean).expand(channels).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing.std).expand(channels).view(1, -1, 1, 1)
    pixels = (images * std + mean).clamp(0, 1)
    cols = max(1, int(len(pixels) ** 0.5 + 0.999))
    rows = (len(pixels) + cols - 1) // cols
    fig = Figure(figsize=(cols * 0.6, rows * 0.6))
    for i, image in enumerate(pixels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        if channels == 1:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(image[:3].permute(1, 2, 0).numpy())
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
    return path
