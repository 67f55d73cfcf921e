"""The segmentation strip: input / label / teacher mask / student mask for a few eval images, as one PNG.

Why a picture: mIoU hides *where* a pruned student fails — thin structures, borders, small objects. A person
looking at four images sees that at once. Both masks come from the shipped ONNX files run in ONNX Runtime, so
the strip shows what deployment will produce, not what the PyTorch model would.

Unlike the other plots (pure functions of report.json, :mod:`edgekd.report.plots`), the strip needs images and
models, so the pipeline draws it once, while it has them, into ``plots/segmentation.png``; ``edgekd report``
keeps that file and shows it again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")

from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from edgekd.data.base import IGNORE_LABEL, DataBundle  # noqa: E402
from edgekd.io import atomic_path  # noqa: E402

SEGMENTATION_PLOT = "segmentation.png"
SEGMENTATION_TITLE = "Eval images: input / label / teacher mask / student mask (ONNX Runtime)"
# Drawn by the distill stage in data-free mode (edgekd.distill.data_free.record): the latest synthetic samples.
SYNTHETIC_PLOT = "synthetic.png"
SYNTHETIC_TITLE = "Synthetic training samples (no training images were used)"
Predict = Callable[[torch.Tensor], torch.Tensor]


def class_colours(num_classes: int) -> np.ndarray:
    """``num_classes + 1`` RGB rows: black background, distinct hues for the classes, grey for ignored."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if num_classes <= 11 else "tab20"].colors
    rows = [(0.0, 0.0, 0.0)] + [palette[i % len(palette)][:3] for i in range(max(0, num_classes - 1))]
    return np.array([*rows, (0.6, 0.6, 0.6)])


def draw_strip(
    images: np.ndarray,
    rows: Sequence[tuple[str, np.ndarray]],
    num_classes: int,
    class_names: Sequence[str] = (),
) -> Figure:
    """A figure with one column per image: the input on top, then one label map per ``rows`` entry.

    Args:
        images: N×C×H×W uint8 inputs (grey or RGB).
        rows: ``(title, N×H×W class map)`` pairs; ``IGNORE_LABEL`` pixels are drawn grey.
        num_classes: Fixes the colours (class ``k`` has the same colour in every row).
        class_names: Legend entries (omitted when empty or too many to read).
    """
    n = len(images)
    colours = class_colours(num_classes)
    cmap = ListedColormap(colours)
    height, width = images.shape[-2:]
    cell = 1.6 * max(1.0, width / height)
    fig = Figure(figsize=(cell * n + 1.2, 1.6 * (len(rows) + 1) + 0.4))
    axes = fig.subplots(len(rows) + 1, n, squeeze=False)
    for j in range(n):
        picture = images[j].transpose(1, 2, 0)
        axes[0][j].imshow(
            picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=255
        )
        for i, (_, labels) in enumerate(rows, start=1):
            shown = np.where(labels[j] == IGNORE_LABEL, num_classes, labels[j])
            axes[i][j].imshow(shown, cmap=cmap, vmin=0, vmax=num_classes, interpolation="nearest")
    for i, title in enumerate(["input", *(t for t, _ in rows)]):
        axes[i][0].set_ylabel(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if class_names and len(class_names) <= 20:
        from matplotlib.patches import Patch

        handles = [Patch(color=colours[k], label=name) for k, name in enumerate(class_names[:num_classes])]
        fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
        fig.subplots_adjust(right=0.85)
    return fig


def write_segmentation_strip(
    path: Path, data: DataBundle, teacher: Predict, student: Predict, count: int = 4
) -> Path:
    """Draw the strip for the first ``count`` eval images into ``path`` (atomically) and return ``path``.

    Args:
        path: Usually ``RUN/plots/segmentation.png``.
        data: Supplies the eval images (raw, for display, and normalised, for the models) and their labels.
        teacher: Normalised batch → N×C×H×W logits (e.g. an :class:`~edgekd.export.ort.OrtPredictor`).
        student: The same for the student.
        count: How many eval images.
    """
    split = data.eval.head(count)
    inputs = data.example_input(len(split))
    labels = split.targets.numpy()
    rows = [
        ("label", labels),
        ("teacher", teacher(inputs).argmax(dim=1).numpy()),
        ("student", student(inputs).argmax(dim=1).numpy()),
    ]
    fig = draw_strip(split.images.numpy(), rows, data.num_classes, data.class_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return path
