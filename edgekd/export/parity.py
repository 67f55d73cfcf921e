"""The parity gate: does the ONNX file compute what the PyTorch model computes, on real inputs?

Why real eval inputs and two numbers: random inputs miss the failure that matters most for traced exports — a
branch on tensor values baked in for the tracing example — and they sit outside the value range BatchNorm
folding and activation clipping see in deployment. ``max_abs_diff`` catches numeric drift; ``agreement``
(top-1 for classification, per pixel for segmentation) says whether the drift changes predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from edgekd.data.base import DataBundle
from edgekd.results import Parity
from edgekd.tasks.base import Task

if TYPE_CHECKING:
    from edgekd.recipe.schema import ExportConfig

Predict = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ParityReference:
    """The PyTorch side of a parity check: the model, the real data it is fed, and how to read its output.

    Why one object: every exported file (FP32, INT8, FP16) is exported from, compared with and evaluated on
    the same three things, so they travel together from the stage down to the gate.

    Attributes:
        model: The PyTorch model (teacher or student); every step leaves its training flag as it found it.
        data: Real eval inputs for tracing, parity and ORT metrics; training images for INT8 calibration.
        task: Picks the prediction tensor out of the model's output, defines agreement and the metrics.
    """

    model: nn.Module
    data: DataBundle
    task: Task


@dataclass(frozen=True)
class ParityLimits:
    """How a parity check is run and passed.

    Attributes:
        samples: Eval inputs compared (all of them when the split is smaller).
        atol: Largest accepted ``max |PyTorch - candidate|``; ``math.inf`` gates on agreement alone.
        min_agreement: Smallest accepted prediction agreement (top-1, or per pixel).
    """

    samples: int
    atol: float
    min_agreement: float

    @classmethod
    def of_export(cls, cfg: ExportConfig) -> ParityLimits:
        """The FP32 gate the recipe's ``export`` section sets (``parity_samples``, ``parity_atol``, ...)."""
        return cls(cfg.parity_samples, cfg.parity_atol, cfg.parity_min_agreement)


def parity_batches(data: DataBundle, samples: int, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """The first ``samples`` eval images (all of them if the split is smaller), normalised, in batches."""
    loader = data.eval_loader(min(batch_size, samples))
    remaining = samples
    for images, _ in loader:
        if remaining <= 0:
            return
        yield images[:remaining]
        remaining -= len(images)


def measure_parity(reference: ParityReference, candidate: Predict, limits: ParityLimits) -> Parity:
    """Compare the reference model (eval mode, inference_mode) with ``candidate`` on the first eval inputs.

    Args:
        reference: The PyTorch model (its training flag is restored afterwards), the data supplying the eval
            inputs, and the task that picks the prediction tensor and defines agreement.
        candidate: Maps an input batch to the prediction tensor (an ORT session wrapper).
        limits: How many eval inputs to compare, and the ``atol``/``min_agreement`` that pass.

    Returns:
        :class:`~edgekd.results.Parity`; ``passed`` iff both limits hold (a NaN anywhere fails).
    """
    model, data, task = reference.model, reference.data, reference.task
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    references, candidates = [], []
    max_diff = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for images in parity_batches(data, limits.samples):
                ref = task.output_tensor(model(images.to(device))).float().cpu()
                cand = candidate(images).float().cpu()
                if ref.shape != cand.shape:
                    return Parity(float("inf"), 0.0, False, len(images))
                max_diff = max(max_diff, float((ref - cand).abs().max()))
                if ref.isnan().any() or cand.isnan().any():
                    max_diff = float("nan")
                references.append(ref)
                candidates.append(cand)
    finally:
        model.train(was_training)
    count = sum(len(r) for r in references)
    agreement = task.agreement(torch.cat(references), torch.cat(candidates))
    passed = max_diff <= limits.atol and agreement >= limits.min_agreement  # False for NaN
    return Parity(max_abs_diff=max_diff, agreement=agreement, passed=passed, samples=count)


def parity_failure(name: str, parity: Parity, limits: ParityLimits) -> str:
    """The one-line GateError message: the numbers, the limits, and what to look at."""
    return (
        f"{name}: PyTorch/ONNX Runtime parity failed on {parity.samples} eval inputs: "
        f"max_abs_diff {parity.max_abs_diff:.3g} (limit export.parity_atol={limits.atol:g}), "
        f"agreement {parity.agreement:.4f} (limit export.parity_min_agreement={limits.min_agreement:g}); "
        "the exported graph differs from the model (look for branches on tensor values or "
        "torch.onnx.is_in_onnx_export() in forward); the file was not written"
    )
